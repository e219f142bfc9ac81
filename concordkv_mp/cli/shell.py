"""`concordkv cli`: one command given on the command line, or an interactive shell.

The shell reads lines with prompt_toolkit (history in ~/.concordkv_history or
$CKV_HISTORY_FILE, completion of command and engine names, Ctrl-C clears the line,
Ctrl-D leaves); with stdin not a terminal it runs the lines it reads, so that commands
can be piped in. What a command does and prints belongs to cli/commands.py; this module
owns the terminal and must not interpret commands itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory

import concordkv_mp
from concordkv_mp.cli.commands import COMMANDS, error_reply, execute, execute_line
from concordkv_mp.errors import ConcordKVError
from concordkv_mp.options import ENGINES

SCAN_KEYWORDS = ("PREFIX", "LIMIT", "REVERSE")


def run_cli(endpoint: str, words: Sequence[str], *, timeout: float) -> int:
    """Connect to `endpoint`; run `words` once if given, else the shell. Exit code:
    1 if the one command (or any piped one) failed, else 0."""
    try:
        client = concordkv_mp.connect(endpoint, timeout=timeout)
    except ConcordKVError as exc:
        print(error_reply(exc.code, str(exc)).text)
        return 1
    try:
        if words:
            reply = execute(client, words)
            if reply.text:
                print(reply.text)
            return 1 if reply.is_error else 0
        if not sys.stdin.isatty():
            return run_lines(client, sys.stdin)
        return run_interactive(client, endpoint)
    finally:
        client.close()


def run_lines(client, lines: Iterable[str], out=print) -> int:
    """Run each line until QUIT or the end; 1 if any command failed."""
    failed = False
    for line in lines:
        reply = execute_line(client, line)
        if reply.quit:
            break
        if reply.text:
            out(reply.text)
        failed |= reply.is_error
    return 1 if failed else 0


def run_interactive(client, endpoint: str) -> int:
    """The shell, until QUIT or Ctrl-D; 0 even if a command failed (the user saw it)."""
    session = PromptSession(history=FileHistory(history_path()), completer=ShellCompleter())
    run_lines(client, _typed_lines(session, f"{endpoint}> "))
    return 0


def _typed_lines(session: PromptSession, prompt: str) -> Iterator[str]:
    while True:
        try:
            yield session.prompt(prompt)
        except KeyboardInterrupt:  # as in a shell: abandon the line, keep the session
            continue
        except EOFError:
            return


def history_path() -> str:
    return os.environ.get("CKV_HISTORY_FILE") or os.path.expanduser("~/.concordkv_history")


class ShellCompleter(Completer):
    """Completes command names first, then engine names after ENGINE, command names
    after HELP and keywords after SCAN; in the case the user started typing in."""

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        words = before.split()
        if not before or before[-1].isspace():
            current, previous = "", words
        else:
            current, previous = words[-1], words[:-1]
        command = previous[0].upper() if previous else None
        if command is None or (command == "HELP" and len(previous) == 1):
            candidates: Sequence[str] = tuple(COMMANDS)
        elif command == "ENGINE" and len(previous) == 1:
            candidates = ENGINES
        elif command == "SCAN":
            candidates = SCAN_KEYWORDS
        else:
            return
        for candidate in candidates:
            if candidate.lower().startswith(current.lower()):
                shown = candidate.lower() if current.islower() else candidate
                yield Completion(shown, start_position=-len(current))
