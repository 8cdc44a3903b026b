"""Settle in ansible-playbook's own process, without forking a worker, the tasks a worker would
only compute: a task whose conditions are false, and a task whose action only computes on the
controller (debug, set_fact, assert, fail, validate_argument_spec, include_tasks, include_role).

Ansible forks a worker for every task and host: the fork, a worker that starts up, templates,
pickles its result and exits cost 8-12 ms here, and for these tasks that is all the worker does.
db-setup has eleven of them (the check-mode notes, the adoption of a database built by the
original scripts, the role's argument check, the connection's assert, the passwords' set_fact, the
migrations' report...); a converged site.yml has over sixty. Ansible itself already runs its meta
tasks in this process.

The parent holds everything the worker would use (the task, its variables, the play context), so
it takes the worker's own steps, with Ansible's own code:
- a false condition: the play context's overrides and magic variables
  (PlayContext.set_task_and_variable_override, post_validate, update_vars) on a copy of the
  variables, then the conditions (Task._resolve_conditional), warnings captured as the worker
  captures them, no_log applied: the result is the worker's ({changed: false, skipped: true,
  skip_reason, false_condition});
- a controller-only action: TaskExecutor(...).run(), as WorkerProcess runs it, on a copy of the
  task (a worker's changes to it die with the worker) and of its variables. Only ansible-core's own
  plugins for those actions qualify (an action plugin of the same name elsewhere is forked as any
  other), and only plain tasks: no loop, delegate_to, async, until/retries, timeout or throttle.
Either result then takes the worker's path back: pickled and read back as from the results queue,
looked up in the queued-task cache, processed by the strategy (registered, counted, shown, its
facts set), after v2_runner_on_start as before.

Anything else is forked as before, and its worker evaluates its conditions again (conditions that
are true, or that fail to evaluate: the worker reports the error as it always has). The price on
those tasks is one evaluation of their conditions here (under 1 ms each). CRUDDUR_IN_PARENT=0 turns
it off.
"""

from __future__ import annotations

import os
import pickle
import sys

import ansible
from ansible.utils.display import Display

display = Display()
# Where ansible-core's own action plugins are.
CORE_ACTIONS = os.path.join(os.path.dirname(os.path.realpath(ansible.__file__)), "plugins", "action", "")

SWITCH = "CRUDDUR_IN_PARENT"
# The actions whose worker only computes on the controller: no connection, no module, no prompt.
CONTROLLER_ONLY = ("debug", "set_fact", "assert", "fail", "validate_argument_spec", "include_tasks", "include_role")


def plain(task) -> bool:
    """A task with nothing that makes its worker's run more than one evaluation."""
    return not (task.loop is not None or task.loop_with or task.delegate_to or task.async_val
                or task.until or task.timeout or task.throttle)


def skipped_result(loader, host, task, task_vars: dict, play_context) -> dict | None:
    """The result the worker would return when this task's conditions are false, else None
    (the conditions are true, fail to evaluate, or the task is not plain)."""
    if not task.when or not plain(task):
        return None
    from ansible._internal import _display_utils
    from ansible._internal._errors import _captured
    from ansible._internal._templating._engine import TemplateEngine
    from ansible.executor.task_executor import TaskExecutor

    templar = TemplateEngine(loader=loader, variables=task_vars)
    try:
        # TaskExecutor._execute and _execute_internal, up to the conditional
        with _display_utils.DeferredWarningContext(variables=task_vars) as warning_ctx:
            variables = task_vars.copy()
            context = play_context.set_task_and_variable_override(task=task, variables=task_vars, templar=templar)
            context.post_validate(templar=templar)
            if not context.remote_addr:
                context.remote_addr = host.address
            context.update_vars(variables)
            false_condition: dict = {}
            if task._resolve_conditional(task.when, variables, result_context=false_condition):
                return None
            result = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False", **false_condition}
            TaskExecutor._apply_task_result_compat(result, warning_ctx)
            _captured.AnsibleActionCapturedError.maybe_raise_on_result(result)
            task.update_result_no_log(templar, result)
    except Exception:  # noqa: BLE001 (the worker evaluates it again and reports what failed)
        return None
    result.pop("warnings", None)
    result.pop("deprecations", None)
    if warnings := warning_ctx.get_warnings():
        result["warnings"] = warnings
    if deprecations := warning_ctx.get_deprecation_warnings():
        result["deprecations"] = deprecations
    return result


def controller_only(task) -> bool:
    """A plain task whose action is ansible-core's own debug, set_fact, assert, fail,
    validate_argument_spec, include_tasks or include_role."""
    from ansible import constants as C
    from ansible.plugins.loader import action_loader
    from ansible.utils.fqcn import add_internal_fqcns

    if not plain(task) or task.action not in add_internal_fqcns(CONTROLLER_ONLY):
        return False
    if task.action in C._ACTION_ALL_INCLUDES:
        return True  # never an action plugin: TaskExecutor answers for the strategy
    try:
        action = action_loader.get(task.action, class_only=True, collection_list=task.collections)
    except Exception:  # noqa: BLE001 (the worker reports it)
        return False
    source = getattr(sys.modules.get(getattr(action, "__module__", "")), "__file__", None) or ""
    return os.path.realpath(source).startswith(CORE_ACTIONS)


def run_here(strategy, host, task, task_vars: dict, play_context) -> tuple[dict, object]:
    """What WorkerProcess._run gets from TaskExecutor, and the task it ran: a copy of the task and
    of its blocks (TaskExecutor post-validates, that is templates in place, the task and every
    block above it; a worker's copies die with it, these are the parent's own), and of its
    variables."""
    from ansible.executor.task_executor import TaskExecutor
    from ansible.plugins import loader as plugin_loader

    own = task.copy(exclude_parent=False, exclude_tasks=True)
    result = TaskExecutor(host, own, dict(task_vars), play_context, strategy._loader,
                          plugin_loader.get_plugin_loader_namespace(), strategy._final_q,
                          strategy._variable_manager).run()
    return result, own


def report(strategy, host, task, task_vars: dict, play_context, result: dict, ran=None) -> None:
    """Hand the result to the strategy as a worker would: StrategyBase._queue_task's bookkeeping,
    then WorkerProcess's send (pickled) and the results thread's receipt."""
    from ansible.executor.task_result import _RawTaskResult

    strategy._queued_task_cache[(host.name, task._uuid)] = {
        "host": host, "task": task, "task_vars": task_vars, "play_context": play_context,
    }
    fields = (ran or task).dump_attrs()
    wire = _RawTaskResult(host=host, task=task, return_data=result, task_fields=fields).as_wire_task_result()
    received = strategy._convert_wire_task_result_to_raw(pickle.loads(pickle.dumps(wire)))  # noqa: S301 (our own bytes)
    with strategy._results_lock:
        strategy._results.append(received)
    strategy._pending_results += 1


def install(before_fork=None) -> bool:
    """Wrap StrategyBase._queue_task (every strategy's way to a worker), once, in the parent.
    before_fork(task) runs before a worker is forked (not for a task settled here). False when
    switched off (then nothing is wrapped)."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    from ansible.plugins.strategy import StrategyBase

    queue_task = StrategyBase._queue_task
    if getattr(queue_task, "_cruddur_in_parent", False):
        return True

    def _queue_task(self, host, task, task_vars, play_context):
        result = skipped_result(self._loader, host, task, task_vars, play_context)
        if result is not None:
            display.vvv(f"cruddur: {task.get_name()!r} skipped in ansible-playbook's own process, no worker forked",
                        host=host.name)
            self._tqm.send_callback("v2_runner_on_start", host, task)
            return report(self, host, task, task_vars, play_context, result)
        if controller_only(task):
            display.vvv(f"cruddur: {task.get_name()!r} run in ansible-playbook's own process, no worker forked",
                        host=host.name)
            self._tqm.send_callback("v2_runner_on_start", host, task)
            result, ran = run_here(self, host, task, task_vars, play_context)
            return report(self, host, task, task_vars, play_context, result, ran)
        if before_fork is not None:
            try:
                before_fork(task)
            except Exception:  # noqa: BLE001,S110 (only a head start for the worker)
                pass
        return queue_task(self, host, task, task_vars, play_context)

    _queue_task._cruddur_in_parent = True
    StrategyBase._queue_task = _queue_task
    return True
