"""Skip a task whose conditions are false in ansible-playbook's own process, without forking a
worker for it.

Ansible forks a worker for every task and host, and the worker's first step is to evaluate the
task's `when`: a task that is skipped costs a fork, a worker that starts up, templates, pickles
its result and exits, about 8-12 ms here for nothing but a False. db-setup skips seven tasks (the
check-mode messages, the adoption of a database built by the original scripts, the backup of a
non-local database...); a converged site.yml skips forty.

The parent already holds everything the worker would use (the task, its variables, the play
context), so here, before a worker is forked, the parent takes the worker's own first steps on a
copy of the variables, with Ansible's own code: the play context's overrides and magic variables
(PlayContext.set_task_and_variable_override, post_validate, update_vars), then the conditions
(Task._resolve_conditional), warnings captured as the worker captures them, no_log applied. When
they are false the result is the worker's result ({changed: false, skipped: true, skip_reason,
false_condition}), and it takes the worker's path back: pickled and read back as from the results
queue, looked up in the queued-task cache, processed by the strategy, registered, counted, shown.
v2_runner_on_start is sent as before.

Everything else is forked as before, untouched, and the worker evaluates its conditions again:
conditions that are true, or that fail to evaluate (the worker reports the error as it always
has), a loop (its conditions are per item), delegate_to (the delegate's variables), throttle.
The price on those tasks is one evaluation of their conditions in the parent (under 1 ms each).
CRUDDUR_PARENT_SKIP=0 turns it off.
"""

from __future__ import annotations

import os
import pickle

from ansible.utils.display import Display

display = Display()

SWITCH = "CRUDDUR_PARENT_SKIP"


def skipped_result(loader, host, task, task_vars: dict, play_context) -> dict | None:
    """The result the worker would return when this task's conditions are false, else None
    (the conditions are true, fail to evaluate, or the task is not one judged here)."""
    if not task.when or task.loop is not None or task.loop_with or task.delegate_to or task.throttle:
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


def report(strategy, host, task, task_vars: dict, play_context, result: dict) -> None:
    """Hand the result to the strategy as a worker would: StrategyBase._queue_task's bookkeeping,
    then WorkerProcess's send (pickled) and the results thread's receipt."""
    from ansible.executor.task_result import _RawTaskResult

    strategy._queued_task_cache[(host.name, task._uuid)] = {
        "host": host, "task": task, "task_vars": task_vars, "play_context": play_context,
    }
    strategy._tqm.send_callback("v2_runner_on_start", host, task)
    wire = _RawTaskResult(host=host, task=task, return_data=result, task_fields=task.dump_attrs()).as_wire_task_result()
    received = strategy._convert_wire_task_result_to_raw(pickle.loads(pickle.dumps(wire)))  # noqa: S301 (our own bytes)
    with strategy._results_lock:
        strategy._results.append(received)
    strategy._pending_results += 1


def install(before_fork=None) -> bool:
    """Wrap StrategyBase._queue_task (every strategy's way to a worker), once, in the parent.
    before_fork(task) runs before a worker is forked (not for a task skipped here). False when
    switched off (then nothing is wrapped)."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    from ansible.plugins.strategy import StrategyBase

    queue_task = StrategyBase._queue_task
    if getattr(queue_task, "_cruddur_parent_skip", False):
        return True

    def _queue_task(self, host, task, task_vars, play_context):
        result = skipped_result(self._loader, host, task, task_vars, play_context)
        if result is None:
            if before_fork is not None:
                try:
                    before_fork(task)
                except Exception:  # noqa: BLE001,S110 (only a head start for the worker)
                    pass
            return queue_task(self, host, task, task_vars, play_context)
        display.vvv(f"cruddur: {task.get_name()!r} skipped in ansible-playbook's own process, no worker forked",
                    host=host.name)
        return report(self, host, task, task_vars, play_context, result)

    _queue_task._cruddur_parent_skip = True
    StrategyBase._queue_task = _queue_task
    return True
