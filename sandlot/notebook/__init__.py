"""Notebook sessions: warm Jupyter kernels in sandboxes, attachable by id from any process.

``start_session(config, skills=[...], init_code=...)`` returns once the kernel
holds the models, skills and libraries; ``attach(session_id)`` reaches it from
another process (the MCP server, ``sandlot sessions``, another agent). Cells run
with ``execute`` and are written to a real ``.ipynb`` as they run. See
``docs/notebooks.md``.
"""

from __future__ import annotations

from ..sync import Portal, Twin, blocking, blocking_twin, mirror
from .client import (
    AsyncNotebookSession,
    SessionServerError,
    aattach,
    alist_sessions,
    ashutdown_session,
    astart_session,
)
from .execution import Execution, ExecutionError, Result
from .session import Mode, SessionError, SessionInfo, Variable
from .skills import Skill, SkillError, load_skills, skills_prompt


class NotebookSession(Twin):
    """Blocking twin of :class:`AsyncNotebookSession`."""

    def __init__(self, inner: AsyncNotebookSession, portal: Portal) -> None:
        self._async = inner
        self._portal = portal

    info = mirror[SessionInfo]("info")
    session_id = mirror(AsyncNotebookSession.session_id)
    kernel_id = mirror(AsyncNotebookSession.kernel_id)
    notebook_path = mirror(AsyncNotebookSession.notebook_path)
    mode = mirror(AsyncNotebookSession.mode)
    prompt = mirror(AsyncNotebookSession.prompt)
    status = mirror(AsyncNotebookSession.status)
    refresh = blocking(AsyncNotebookSession.refresh)
    execute = blocking(AsyncNotebookSession.execute)
    wait = blocking(AsyncNotebookSession.wait)
    edit_cell = blocking(AsyncNotebookSession.edit_cell)
    add_markdown = blocking(AsyncNotebookSession.add_markdown)
    variables = blocking(AsyncNotebookSession.variables)
    interrupt = blocking(AsyncNotebookSession.interrupt)
    restart = blocking(AsyncNotebookSession.restart)
    shutdown = blocking(AsyncNotebookSession.shutdown)
    exec = blocking(AsyncNotebookSession.exec)
    read_file = blocking(AsyncNotebookSession.read_file)
    write_file = blocking(AsyncNotebookSession.write_file)
    list_files = blocking(AsyncNotebookSession.list_files)
    call_function = blocking(AsyncNotebookSession.call_function)
    close = blocking(AsyncNotebookSession.close)

    def __enter__(self) -> NotebookSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


start_session = blocking_twin(astart_session, into=NotebookSession)
attach = blocking_twin(aattach, into=NotebookSession)
list_sessions = blocking_twin(alist_sessions)
shutdown_session = blocking_twin(ashutdown_session)


__all__ = [
    "AsyncNotebookSession",
    "Execution",
    "ExecutionError",
    "Mode",
    "NotebookSession",
    "Result",
    "SessionError",
    "SessionInfo",
    "SessionServerError",
    "Skill",
    "SkillError",
    "Variable",
    "aattach",
    "alist_sessions",
    "ashutdown_session",
    "astart_session",
    "attach",
    "list_sessions",
    "load_skills",
    "shutdown_session",
    "skills_prompt",
    "start_session",
]
