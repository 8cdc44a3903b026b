"""Unit tests of the backup module's retention rule and of what it finds an interrupted backup left
(real files in a temporary directory)."""

from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_backup as backup



def make(directory, *stamps):
    for stamp in stamps:
        for suffix in ("", ".sha256", ".json"):
            (directory / f"cruddur-{stamp}.dump{suffix}").write_text("x")


def test_retention_keeps_the_newest_and_check_mode_counts_the_one_about_to_be_taken(tmp_path):
    make(tmp_path, "20260101T000000Z", "20260102T000000Z", "20260103T000000Z")
    (tmp_path / "cruddur_other-20250101T000000Z.dump").write_text("x")  # another database's
    # --check before a new backup with keep=2: the two oldest would go (the new one makes three).
    would = backup.retain(str(tmp_path), "cruddur", 2, True, adding=1)
    assert [p.rsplit("/", 1)[1] for p in would] == ["cruddur-20260101T000000Z.dump", "cruddur-20260102T000000Z.dump"]
    assert len(list(tmp_path.iterdir())) == 10  # check mode removed nothing
    removed = backup.retain(str(tmp_path), "cruddur", 2, False)
    assert [p.rsplit("/", 1)[1] for p in removed] == ["cruddur-20260101T000000Z.dump"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cruddur-20260102T000000Z.dump", "cruddur-20260102T000000Z.dump.json", "cruddur-20260102T000000Z.dump.sha256",
        "cruddur-20260103T000000Z.dump", "cruddur-20260103T000000Z.dump.json", "cruddur-20260103T000000Z.dump.sha256",
        "cruddur_other-20250101T000000Z.dump"]
    assert backup.retain(str(tmp_path), "cruddur", 0, False) == []  # 0 keeps all


def dead_pid():
    """A pid no process has: a child that has exited and been reaped."""
    import subprocess
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leftovers_are_what_dead_runs_left_and_never_a_live_run_or_a_complete_backup(tmp_path):
    import os
    make(tmp_path, "20260101T000000Z")  # complete: kept
    dead, live = dead_pid(), os.getpid()
    names = [f"cruddur-20260102T000000Z.dump.partial-{dead}",          # a killed pg_dump's file
             f"cruddur-20260102T000000Z.dump.sha256.partial-{dead}",   # a killed sidecar write
             "cruddur-20260103T000000Z.dump.sha256",                   # sidecars whose dump never came
             "cruddur-20260103T000000Z.dump.json",
             f"cruddur-20260104T000000Z.dump.partial-{live}",          # a run still writing: kept
             "cruddur-20260104T000000Z.dump.sha256",                   # ... and its sidecar: kept
             f"cruddur_other-20260102T000000Z.dump.partial-{dead}"]    # another database's: kept
    for name in names:
        (tmp_path / name).write_text("x")
    found = sorted(p.rsplit("/", 1)[1] for p in backup.leftovers(str(tmp_path), "cruddur"))
    assert found == sorted(names[:4])
    assert backup.backups_of(str(tmp_path), "cruddur") == [str(tmp_path / "cruddur-20260101T000000Z.dump")]
