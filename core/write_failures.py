"""What to tell the user when the system refuses a write into a run folder: a full disk, a quota, a read-only
or failing disk.

One wording for every file a run writes (its checkpoints, metrics.csv,
summary.json, train.log): the file, the system's reason in the user's words,
what was kept as it was, and how to go on. The writer says what it kept,
since that differs: a checkpoint or summary.json is replaced whole or not at
all, metrics.csv is cut back to its last whole row.
"""

from __future__ import annotations

import errno
from pathlib import Path

#: errno -> (the reason in the user's words, what to do about it) for a write the system refused
WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on the disk", "free space on the disk of {folder}"),
    **({errno.EDQUOT: ("the disk quota is exceeded", "free space within your quota on the disk of {folder}")}
       if hasattr(errno, "EDQUOT") else {}),
    errno.EROFS: ("the file system is read-only", "make {folder} writable again (remount it read-write)"),
    errno.EACCES: ("permission denied", "make {folder} writable for you again"),
    errno.EPERM: ("operation not permitted", "make {folder} writable for you again"),
    errno.EIO: ("an input/output error (a failing disk or network file system)",
                "check the disk of {folder} (or its network connection)"),
}


def refused_by_system(error: BaseException) -> bool:
    """Whether `error` is the system refusing a write (`WRITE_FAILURES`), not a bug or a message of hydranet's."""
    from hydranet.core.errors import HydranetError

    return isinstance(error, OSError) and not isinstance(error, HydranetError) and error.errno in WRITE_FAILURES


def write_failed(what: str, error: OSError, run_dir: Path, option: str, kept: str) -> str:
    """"cannot write WHAT: WHY; KEPT. What to do and continue with RESUME-COMMAND" (start again without a last.pt).

    `what` names the file ("checkpoint RUN/last.pt", "RUN/metrics.csv"); `kept` says what is as it was before.
    """
    from hydranet.core.run import resume_command

    why, action = WRITE_FAILURES[error.errno]
    action = action.format(folder=run_dir)
    go_on = (f"{action} and continue with {resume_command(run_dir, option)}" if (run_dir / "last.pt").is_file()
             else f"{action} and start the run again")
    return f"cannot write {what}: {why}; {kept}. {go_on[0].upper() + go_on[1:]}"
