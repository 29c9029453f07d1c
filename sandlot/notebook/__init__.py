"""Notebook sessions: warm Jupyter kernels in sandboxes, attachable by id from any process.

``start_session(config, skills=[...], init_code=...)`` returns once the kernel
holds the models, skills and libraries; ``attach(session_id)`` reaches it from
another process (the MCP server, ``sandlot sessions``, another agent). Cells run
with ``execute`` and are written to a real ``.ipynb`` as they run. See
``docs/notebooks.md``.
"""

from __future__ import annotations

from .client import (
    AsyncNotebookSession,
    NotebookSession,
    SessionServerError,
    aattach,
    alist_sessions,
    ashutdown_session,
    astart_session,
    attach,
    list_sessions,
    shutdown_session,
    start_session,
)
from .execution import Execution, ExecutionError, Result
from .skills import Skill, SkillError, load_skills, skills_prompt
from .wire import Mode, SessionError, SessionInfo, Variable

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
