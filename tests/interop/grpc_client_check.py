"""A plain grpcio client, generated from proto/ by tests/interop/setup.sh, against the gateway.

Run by tests/interop.rs with BATCHGATE_ADDR (host:port, plaintext) and
BATCHGATE_PY_STUBS (the directory holding the generated `batchgate` package).
Prints `ok: <step>` on stdout after asserting each reply. Every call has a
deadline. The script creates exactly one upstream Sutro job: its second
CreateJob is a client retry with the same request_id, which the gateway replays.
"""

import collections
import os
import sys
import uuid

import grpc

sys.path.insert(0, os.environ["BATCHGATE_PY_STUBS"])

from google.protobuf import struct_pb2  # noqa: E402
from batchgate.sutro.v1 import jobs_pb2 as jobs, jobs_pb2_grpc as jobs_grpc  # noqa: E402
from batchgate.xai.v1 import batches_pb2 as batches, batches_pb2_grpc as batches_grpc  # noqa: E402

CALL_S = 10  # deadline of a unary call
STREAM_S = 60  # deadline of a whole server stream (watch, results)


def ok(step, detail=""):
    print(f"ok: {step}{' ' + detail if detail else ''}", flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def struct(value):
    s = struct_pb2.Struct()
    s.update(value)
    return s


def job_kind(message):
    return jobs.WatchEventKind.Name(message.kind)


def batch_kind(message):
    return batches.WatchEventKind.Name(message.kind)


def sutro_part(channel, run_id):
    stub = jobs_grpc.JobServiceStub(channel)
    prompts = [f"interop prompt {i}: name a prime number" for i in range(7)]
    request = jobs.CreateJobRequest(
        model="gpt-oss-20b",
        prompts=jobs.StringInputs(values=prompts),
        name="grpcio interop",
        request_id=f"interop-{run_id}",
    )

    first = stub.CreateJob(request, timeout=CALL_S)
    check(first.job_id, f"CreateJob returned no job_id: {first}")
    check(not first.replayed, f"the first CreateJob says replayed: {first}")
    ok("create-job", first.job_id)

    again = stub.CreateJob(request, timeout=CALL_S)  # a client retry
    check(again.job_id == first.job_id, f"the retried CreateJob made job {again.job_id}, the first made {first.job_id}")
    check(again.replayed, f"the retried CreateJob is not marked replayed: {again}")
    ok("create-job-replayed", again.job_id)

    messages = list(stub.WatchJob(jobs.WatchJobRequest(job_id=first.job_id), timeout=STREAM_S))
    kinds = [job_kind(m) for m in messages]
    check(messages, "WatchJob sent nothing")
    check(kinds[0] == "WATCH_EVENT_KIND_SNAPSHOT", f"WatchJob's first message is {kinds[0]}: {kinds}")
    check(kinds[-1] == "WATCH_EVENT_KIND_FINAL", f"WatchJob's last message is {kinds[-1]}: {kinds}")
    check(kinds.count("WATCH_EVENT_KIND_FINAL") == 1, f"WatchJob sent FINAL more than once: {kinds}")
    final = messages[-1].progress
    check(final.job_id == first.job_id, f"WatchJob's FINAL is about {final.job_id}")
    check(
        final.status == jobs.JOB_STATUS_SUCCEEDED,
        f"WatchJob ended with {jobs.JobStatus.Name(final.status)} (raw {final.raw_status!r}), want SUCCEEDED",
    )
    rows = [m.progress.rows_processed for m in messages]
    check(rows == sorted(rows), f"rows_processed went backwards: {rows}")
    ok("watch-job", f"{len(messages)} messages, SNAPSHOT ... FINAL SUCCEEDED")

    results = stub.GetJobResults(
        jobs.GetJobResultsRequest(job_id=first.job_id, include_inputs=True, max_rows_per_chunk=3),
        timeout=STREAM_S,
    )
    got = []
    for chunk in results:
        check(chunk.total_rows == len(prompts), f"a results chunk says total_rows={chunk.total_rows}, want {len(prompts)}")
        got.extend(chunk.rows)
    indices = [r.index for r in got]
    check(indices == list(range(len(prompts))), f"result indices are {indices}, want 0..{len(prompts) - 1}")
    missing = [r.index for r in got if not r.HasField("output") or r.output.WhichOneof("kind") in (None, "null_value")]
    check(not missing, f"rows {missing} have no output")
    inputs = [r.input.string_value for r in got]
    check(inputs == prompts, f"result inputs do not line up with the prompts:\n {inputs}\n {prompts}")
    ok("job-results", f"{len(got)} rows, indices 0..{len(got) - 1}, every output present")


def xai_part(channel, run_id):
    stub = batches_grpc.BatchServiceStub(channel)
    batch = stub.CreateBatch(batches.CreateBatchRequest(name="grpcio interop", request_id=f"interop-{run_id}"), timeout=CALL_S)
    check(batch.batch_id, f"CreateBatch returned no batch_id: {batch}")
    check(batch.name == "grpcio interop", f"CreateBatch returned name {batch.name!r}")
    ok("create-batch", batch.batch_id)

    def chat(prompt, request_id=None):
        body = struct({"model": "grok-4", "messages": [{"role": "user", "content": prompt}], "max_tokens": 32})
        request = batches.BatchRequest(chat_get_completion=body)
        if request_id is not None:
            request.batch_request_id = request_id
        return request

    sent = [chat("What is 2 + 2?", "interop-q1"), chat("Name a colour."), chat("Say hi.", "interop-q3"), chat("Spell cat.")]
    added = stub.AddBatchRequests(batches.AddBatchRequestsRequest(batch_id=batch.batch_id, batch_requests=sent), timeout=CALL_S)
    ids = list(added.batch_request_ids)
    check(len(ids) == len(sent), f"AddBatchRequests returned {len(ids)} ids for {len(sent)} requests: {ids}")
    check(ids[0] == "interop-q1" and ids[2] == "interop-q3", f"AddBatchRequests changed the given ids: {ids}")
    check(all(ids) and len(set(ids)) == len(ids), f"AddBatchRequests ids are empty or repeated: {ids}")
    check(added.upstream_calls >= 1, f"AddBatchRequests reports {added.upstream_calls} upstream calls")
    ok("add-batch-requests", f"{len(ids)} requests")

    messages = list(stub.WatchBatch(batches.WatchBatchRequest(batch_id=batch.batch_id), timeout=STREAM_S))
    kinds = [batch_kind(m) for m in messages]
    check(messages, "WatchBatch sent nothing")
    check(kinds[0] == "WATCH_EVENT_KIND_SNAPSHOT", f"WatchBatch's first message is {kinds[0]}: {kinds}")
    check(kinds[-1] == "WATCH_EVENT_KIND_FINAL", f"WatchBatch's last message is {kinds[-1]}: {kinds}")
    last = messages[-1]
    check(
        last.done_reason == batches.DONE_REASON_COMPLETED,
        f"WatchBatch ended with {batches.DoneReason.Name(last.done_reason)}, want COMPLETED",
    )
    state = last.batch.state
    check(
        (state.num_requests, state.num_pending) == (len(sent), 0),
        f"the FINAL batch state is {state}, want {len(sent)} requests and none pending",
    )
    ok("watch-batch", f"{len(messages)} messages, SNAPSHOT ... FINAL COMPLETED")

    counts = collections.Counter()
    for chunk in stub.StreamBatchResults(
        batches.StreamBatchResultsRequest(batch_id=batch.batch_id, upstream_page_size=2), timeout=STREAM_S
    ):
        for result in chunk.results:
            counts[result.batch_request_id] += 1
            outcome = result.WhichOneof("result")
            check(outcome is not None, f"result {result.batch_request_id} has neither a response nor an error")
    repeated = {i: n for i, n in counts.items() if n != 1}
    check(not repeated, f"StreamBatchResults sent these ids more than once: {repeated}")
    check(set(counts) == set(ids), f"StreamBatchResults ids {sorted(counts)} are not the added ids {sorted(ids)}")
    ok("batch-results", f"{len(counts)} results, each added id exactly once")


def main():
    addr = os.environ["BATCHGATE_ADDR"]
    run_id = uuid.uuid4().hex[:12]
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_S)
        try:
            sutro_part(channel, run_id)
            xai_part(channel, run_id)
        except grpc.RpcError as error:
            print(f"gRPC call failed: {error.code()}: {error.details()}", file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
