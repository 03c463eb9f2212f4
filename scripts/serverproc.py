"""A server process for the benchmark and attack scripts: started on a free loopback port,
waited for, and stopped (with everything it started) when done."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(port, path, timeout=2.0):
    """Status of `GET path` on 127.0.0.1:port, or 0 when nothing answers."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        return c.getresponse().status
    except OSError:
        return 0


class ServerProcess:
    """`with ServerProcess(cmd) as srv:` runs `cmd` (`{port}` replaced by a free port) until the
    block ends; `srv.port` and `srv.pid` say where it is. `SERVER_LOG` names a file for its
    output. Waits until `ready_path` answers 200 (exits the script if it never does)."""

    def __init__(self, cmd, ready_path="/health", wait_s=300):
        self.port = free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.ready_path = ready_path
        self.wait_s = wait_s

    def __enter__(self):
        log = open(os.environ.get("SERVER_LOG", os.devnull), "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        t0 = time.monotonic()
        while get_status(self.port, self.ready_path) != 200:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                sys.exit(f"the server exited: {' '.join(self.cmd)}")
            if time.monotonic() - t0 > self.wait_s:
                self.__exit__(None, None, None)
                sys.exit("the server did not come up")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return False
