"""Sutro's official Python SDK (sutro==0.1.67) against the batchgate simulator.

Run by tests/interop.rs with SUTRO_API_URL (the simulator's origin, e.g.
http://127.0.0.1:PORT; the SDK allows plain http only on loopback) and
SUTRO_API_KEY. Prints `ok: <step>` on stdout after asserting what the SDK
returned, for: create, await, results, cancel, quotas, attach.

The SDK chatters (spinners, progress bars) on stdout; that goes to stderr here,
so stdout holds only the `ok:` lines. The API key is masked in everything this
process prints. Every wait is bounded: the SDK itself sets no timeouts, so each
step runs under a watchdog that aborts the process with a traceback.
"""

import faulthandler
import os
import shutil
import socket
import sys
import tempfile
import time

STEP_TIMEOUT_S = 60  # any single step; the simulator runs 50 rows/s
POLL_S = 0.05

RESULT = sys.stdout
API_KEY = os.environ.get("SUTRO_API_KEY", "")
API_URL = os.environ.get("SUTRO_API_URL", "")


class Masked:
    """A text stream that forwards to another with the API key masked."""

    def __init__(self, stream, keep=None):
        self._stream = stream
        self.keep = keep  # a list that also receives the text, when set

    def write(self, text):
        if API_KEY:
            text = text.replace(API_KEY, "***")
        if self.keep is not None:
            self.keep.append(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


SDK_OUTPUT = Masked(sys.stderr)
sys.stdout = SDK_OUTPUT
sys.stderr = Masked(sys.stderr)


def ok(step, detail=""):
    RESULT.write(f"ok: {step}{' ' + detail if detail else ''}\n")
    RESULT.flush()


def fail(message):
    raise AssertionError(message)


class Step:
    """Bounds one step: after STEP_TIMEOUT_S the process dumps its threads and exits."""

    def __init__(self, name, timeout=STEP_TIMEOUT_S):
        self.name, self.timeout = name, timeout

    def __enter__(self):
        print(f"--- {self.name}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(self.timeout, exit=True)
        return self

    def __exit__(self, *exc):
        faulthandler.cancel_dump_traceback_later()
        return False


def main():
    if not API_URL or not API_KEY:
        fail("set SUTRO_API_URL (the simulator's origin) and SUTRO_API_KEY")
    # A blocked read never waits forever (urllib3/requests with no timeout fall back
    # to the socket default). Longer than the simulator's quietest stretch.
    socket.setdefaulttimeout(30)
    # Loopback must not go through a proxy that happens to be configured.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    # The SDK caches results under ~/.sutro and reads ~/.sutro/config.json: use a
    # private, throw-away home.
    home = tempfile.mkdtemp(prefix="sutro-sdk-check-")
    os.environ["HOME"] = home
    try:
        run()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run():
    import requests

    # `import sutro` builds a client, which asks pypi.org for the newest version
    # (2 s timeout, errors ignored). Keep the check hermetic: no call leaves this machine.
    real_get = requests.get

    def get(url, *args, **kwargs):
        if str(url).startswith("https://pypi.org/"):
            raise requests.ConnectionError("pypi lookups are disabled in this check")
        return real_get(url, *args, **kwargs)

    requests.get = get
    from sutro import Sutro

    so = Sutro()  # SUTRO_API_URL / SUTRO_API_KEY from the environment
    expected_base = API_URL.rstrip("/")
    expected_base = expected_base if expected_base.endswith("/v1") else expected_base + "/v1"
    if so.api_url != expected_base:
        fail(f"the SDK normalised {API_URL!r} to {so.api_url!r}, want {expected_base!r}")
    if so.api_key != API_KEY:
        fail("the SDK did not take SUTRO_API_KEY from the environment")

    def status_of(job_id):
        status = so.get_job_status(job_id)
        if status is None:
            fail(f"get_job_status({job_id}) failed (see the SDK output above)")
        return str(getattr(status, "value", status))

    def wait_for(job_id, wanted, timeout):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            status = status_of(job_id)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in wanted:
                return status, seen
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                fail(f"job {job_id} ended {status}, wanted one of {wanted}; statuses seen {seen}")
            time.sleep(POLL_S)
        fail(f"job {job_id} never reached {wanted} in {timeout}s; statuses seen {seen}")

    def create(inputs, name):
        job_id = so.infer(inputs, model="gpt-oss-20b", name=name, job_priority=0, stay_attached=False)
        if not isinstance(job_id, str) or not job_id:
            fail(f"infer(stay_attached=False) returned {job_id!r}, want the job id (see the SDK output)")
        return job_id

    # --- create: POST /v1/batch-inference -> {"results": "<job id>"}
    inputs = [f"In one word, the colour of thing number {i}?" for i in range(20)]
    with Step("create"):
        job_id = create(inputs, "sdk-check-create")
    ok("create", job_id)

    # --- await: GET /v1/job-status/{id} every 5 s, then POST /v1/job-results
    with Step("await"):
        frame = so.await_job_completion(job_id, timeout=45)
        if frame is None:
            fail(f"await_job_completion({job_id}) returned None (failed, cancelled or timed out)")
        if frame.height != len(inputs):
            fail(f"await_job_completion returned {frame.height} rows, want {len(inputs)}: {frame}")
        status = status_of(job_id)
        if status != "SUCCEEDED":
            fail(f"after await_job_completion the job is {status}, want SUCCEEDED")
    ok("await", f"{frame.height} rows, SUCCEEDED")

    # --- results: POST /v1/job-results {include_inputs: true} -> column arrays
    with Step("results"):
        frame = so.get_job_results(job_id, include_inputs=True, unpack_json=False, disable_cache=True)
        if frame is None:
            fail(f"get_job_results({job_id}) returned None (see the SDK output)")
        if "inputs" not in frame.columns or "inference_result" not in frame.columns:
            fail(f"get_job_results columns are {frame.columns}, want inputs and inference_result")
        got_inputs = frame["inputs"].to_list()
        if got_inputs != inputs:
            fail(f"result inputs are not the inputs sent, in order:\n sent {inputs}\n got  {got_inputs}")
        outputs = frame["inference_result"].to_list()
        if len(outputs) != len(inputs):
            fail(f"{len(outputs)} outputs for {len(inputs)} inputs")
        empty = [i for i, o in enumerate(outputs) if o is None or (isinstance(o, str) and not o.strip())]
        if empty:
            fail(f"rows {empty} have no output: {outputs}")
    ok("results", f"{len(outputs)} rows, inputs line up with outputs")

    # --- cancel: GET /v1/job-cancel/{id} on a job that is still queued or running
    cancel_inputs = [f"row {i}" for i in range(300)]  # ~6 s at 50 rows/s
    with Step("cancel"):
        victim = create(cancel_inputs, "sdk-check-cancel")
        before = status_of(victim)
        if before not in ("QUEUED", "STARTING", "RUNNING"):
            fail(f"the job to cancel is already {before}")
        reply = so.cancel_job(victim)
        if not isinstance(reply, dict):
            fail(f"cancel_job returned {reply!r}, want the JSON body (see the SDK output)")
        if reply.get("cancelled") is False:
            fail(f"cancel_job answered {reply!r}")
        final, seen = wait_for(victim, ("CANCELLED",), 30)
    ok("cancel", f"{' -> '.join([before] + [s for s in seen if s != before])}")

    # --- quotas: GET /v1/get-quotas -> {"quotas": [...]}
    with Step("quotas"):
        quotas = so.get_quotas()
        if not isinstance(quotas, list) or len(quotas) != 2:
            fail(f"get_quotas returned {quotas!r}, want a list of two priorities")
        by_priority = {q.get("priority"): q for q in quotas if isinstance(q, dict)}
        if set(by_priority) != {0, 1}:
            fail(f"get_quotas priorities are {sorted(by_priority, key=str)}, want 0 and 1: {quotas}")
        p0 = by_priority[0]
        if (p0.get("row_quota"), p0.get("token_quota")) != (1000, 1_000_000):
            fail(f"priority 0 quota is {p0}, want 1000 rows / 1000000 tokens")
        for q in quotas:
            if not all(isinstance(q.get(k), int) and q.get(k) > 0 for k in ("row_quota", "token_quota")):
                fail(f"quota entry {q} lacks positive row_quota/token_quota")
    ok("quotas", f"{quotas}")

    # --- attach: GET /v1/jobs/{id}, then the NDJSON stream GET /v1/stream-job-progress/{id}
    attach_inputs = [f"attach row {i}" for i in range(150)]  # ~3 s at 50 rows/s
    with Step("attach"):
        attached = create(attach_inputs, "sdk-check-attach")
        wait_for(attached, ("STARTING", "RUNNING"), 20)
        captured = []
        SDK_OUTPUT.keep = captured
        started = time.monotonic()
        try:
            result = so.attach(attached)
        finally:
            SDK_OUTPUT.keep = None
        took = time.monotonic() - started
        said = "".join(captured)
        if result is not None:
            fail(f"attach returned {result!r}")  # it always returns None in 0.1.67
        if "Job already completed" in said:
            fail("the job finished before attach streamed it (attach returned without streaming)")
        if "not found" in said:
            fail(f"attach could not find job {attached} (GET /v1/jobs/{{id}} failed or had no `job`)")
        if "Job succeeded" not in said:
            fail(
                "attach's progress stream ended without reporting progress == num_rows "
                f"(no 'Job succeeded' in the SDK output):\n{said}"
            )
        status = status_of(attached)
        if status != "SUCCEEDED":
            fail(f"after attach returned the job is {status}, want SUCCEEDED")
    ok("attach", f"streamed to the end in {took:.1f}s, SUCCEEDED")


if __name__ == "__main__":
    main()
