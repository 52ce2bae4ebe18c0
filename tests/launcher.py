"""A Python that has imported torch, numpy and yaml once and forks one child per script run
(conftest.run_script): each child is its own process that runs the script as `python script
args` would (its own __main__, sys.argv, sys.path[0], working directory, environment, stdin
from /dev/null, stdout and stderr to files, the exit code Python gives), without paying the
seconds of `import torch` again.  Every kit script imports torch before it does anything, so
only the import itself is shared; the kit's own modules are imported afresh by each child.
What a child cannot have afresh is the str hash seed (fixed when Python starts): runs whose
results are compared with each other for determinism use a new Python (run_script(fresh=True)).

Protocol, one JSON object a line: request {"argv", "cwd", "env", "stdout", "stderr"} on stdin;
answers {"pid"} when the child is started, then {"rc"} when it has ended.
"""
import json
import os
import sys

import numpy  # noqa: F401  (the imports every kit script makes first)
import torch  # noqa: F401
import yaml  # noqa: F401


def child(req):
    """In the forked process: run the script, never return."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        script = req["argv"][0]
        sys.argv = list(req["argv"])
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        numpy.random.seed()  # fresh entropy, as in a new process (the random module reseeds itself at fork)
        import runpy
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:  # as the interpreter treats it: None 0, an int itself, else printed and 1
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        import threading
        threading._shutdown()  # non-daemon threads first, then the atexit functions, as at exit
        import atexit
        atexit._run_exitfuncs()
        import gc
        gc.collect()  # objects the script left behind are finalised (files flushed), as at the end of Python
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed by the script (ValueError: Python's exit skips it too)
                pass                        # or unwritable (OSError): the captured text shows what got out
    finally:
        os._exit(code & 0xFF)


def main():
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing but answers on the answer channel
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(req)
        answer.write(json.dumps({"pid": pid}) + "\n")
        answer.flush()
        _, status = os.waitpid(pid, 0)
        answer.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        answer.flush()


if __name__ == "__main__":
    main()
