"""`make demo` as a user runs it: one command, a summary, nothing left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.kubelet]

SANDBOX = str(Path(sys.executable).with_name("otp-sandbox"))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline[:120])
    return found


def _work_dir(output: str) -> str:
    """The demo's work directory, from the KUBECONFIG line it prints."""
    match = re.search(r"KUBECONFIG=(/\S+/otp-demo-[^/]+)/", output)
    assert match, output
    return match.group(1)


def assert_summary(output: str) -> None:
    """What the demo shows a user: every condition on its way to Ready, then the summary."""
    for condition in ("RelayAvailable=True", "Auth0Synced=True", "Ready=True"):
        assert condition in output
    summary = output[output.index("Summary"):]
    assert re.search(r"channel:\s+shop/prod \(phone-provider\)", summary)
    assert re.search(r"relay URL:\s+https://127\.0\.0\.1:\d+/prod", summary)
    assert re.search(r"Auth0 action:\s+[0-9a-f-]{36} \(deployed version 1\)", summary)
    assert re.search(r'SMS at 8x8:\s+to \*+4567 from ShopOTP: "Your ShopOTP code is \*{6}"', summary)
    assert re.search(r"end to end:\s+\d+ ms", summary)
    assert re.search(r"8x8 receipt:\s+delivered to \*{6}4567 after (0\.[89]|[1-9]\.\d) s", summary)
    assert re.search(r'call at 8x8:\s+to \*{6}4567 from \+6562345678, voice en-US-Standard-A read 2x: '
                     r'"Your ShopOTP code is \* \* \* \* \* \*"', summary)
    assert re.search(r"call outcome:\s+COMPLETED \(answered\) to \*{6}4567, 8x8's session summary after "
                     r"\d+\.\d s", summary)
    assert re.search(r"delivery:\s+last 15 min: text 1 sent, 1 delivered; voice 1 placed, 1 answered, 0 not", summary)
    # the full number and the codes never reach the terminal
    assert "6591234567" not in output and "482913" not in output
    assert "739154" not in output and "7 3 9 1 5 4" not in output


@pytest.mark.timeout(780)  # the demo may take 600 s to its summary, 120 s to stop
def test_demo_delivers_an_otp_end_to_end_stays_up_with_keep_and_leaves_nothing_running() -> None:
    """`make demo ARGS=--keep`, the README's demo with one step more: the same run and summary as
    `make demo` (which ends right after the summary; the only difference is the wait), then the
    cluster answers while the demo waits, and Ctrl-C stops it all. One run, one control plane."""
    process = subprocess.Popen([SANDBOX, "demo", "--keep"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "until you press Ctrl-C" in line:
                break
        output = "".join(lines)
        assert "until you press Ctrl-C" in output, output
        assert_summary(output)
        kubeconfig = next(l.split("=", 1)[1].strip() for l in lines if "export KUBECONFIG=" in l)
        assert Path(kubeconfig).exists()
        # the cluster is still up and the channel still Ready while the demo waits
        from kubernetes import client, config

        api = config.new_client_from_config(kubeconfig)
        channel = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "otprelay.io", "v1alpha1", "shop", "otpchannels", "prod")
        ready = {c["type"]: c["status"] for c in channel["status"]["conditions"]}["Ready"]
        assert ready == "True"
        api.close()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output + rest
        assert "stopping everything" in rest
        work_dir = _work_dir(output)
        assert not Path(kubeconfig).exists() and not Path(work_dir).exists()
        assert _processes_mentioning(work_dir) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
