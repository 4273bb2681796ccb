"""Two `MultiWorkerMirroredStrategy` worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(command_for, cwd, timeout, num_workers=2, env=None):
    """Starts `command_for(index)` per worker with its `TF_CONFIG`; bounded.

    Returns each worker's combined output after asserting it exited with 0.
    Workers still running at the timeout are killed, so a hung collective
    fails the test instead of blocking the suite.
    """
    cluster = [f"127.0.0.1:{p}" for p in free_ports(num_workers)]
    procs = []
    for index in range(num_workers):
        tf_config = {
            "cluster": {"worker": cluster},
            "task": {"type": "worker", "index": index},
        }
        worker_env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
            **(env or {}),
        )
        procs.append(
            subprocess.Popen(
                command_for(index),
                cwd=cwd,
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        outputs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    return outputs
