"""`grpo-cli` and `python -m grpo_cli`: take SIGINT and SIGTERM first, then import and run the command line.

Importing the CLI (typer, every command) and then torch, transformers and trl takes seconds; a signal in them ends the
command with one line and 130 or 143 (`interrupts.take_signals`), never a traceback or a process killed silently.
"""

import sys


def main() -> None:
    try:
        from grpo_cli import interrupts

        interrupts.take_signals()
        from grpo_cli.cli import main as run

        run()
    except KeyboardInterrupt:  # before take_signals: Python's own handler
        sys.stderr.write("interrupted (SIGINT)\n")
        sys.exit(130)
    except BaseException as stop:
        interrupts = sys.modules.get("grpo_cli.interrupts")
        if interrupts is None or not isinstance(stop, interrupts.Interrupted):
            raise  # SystemExit, with the command's exit code
        with interrupts.held():  # a second signal does not cut this short
            sys.stderr.write(f"interrupted ({stop})\n")
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
