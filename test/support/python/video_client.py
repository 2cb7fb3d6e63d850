"""A third-party gRPC client of the service: Python's C-core (Debian python3-grpcio).

Run by test/support/third-party.ts with Debian's /usr/bin/python3 and the stubs
protoc generated from proto/ on PYTHONPATH. Prints one JSON object per line:
{"check": name, "ok": bool, "detail": str}, and {"event": ...} lines for the
steps a test waits on.

  video_client.py TARGET rpcs            every RPC once, with the answers checked
  video_client.py TARGET abandon         large ListVideos pages abandoned at a
                                         20 ms deadline, then calls on the same channel
  video_client.py TARGET watch-idle AFTER VIDEO_ID
                                         WatchEvents open and quiet until the test
                                         writes a line, then the next event must arrive
  video_client.py TARGET watch-cancel    WatchEvents open; on a line from the test,
                                         cancel the call
  video_client.py TARGET watch-close     WatchEvents open; on a line from the test,
                                         close the channel (FIN, no GOAWAY)
Each scenario waits for stdin to close before it exits, so what the test sees
on the server is the client's doing, not the process's exit.
"""

import hashlib
import json
import sys
import time
import urllib.request

import grpc
from google.protobuf import field_mask_pb2

from google.rpc import error_details_pb2, status_pb2
from health.v1 import health_pb2, health_pb2_grpc
from video.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    video_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

TIMEOUT = 10


def emit(**fields):
    print(json.dumps(fields), flush=True)


def check(name, ok, detail=""):
    emit(check=name, ok=bool(ok), detail=str(detail))


def attempt(name, fn):
    try:
        fn()
    except Exception as e:  # reported, not raised: the test names the failing check
        check(name, False, f"{type(e).__name__}: {e}")


def bad_request_fields(err):
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_detail in status.details:
                br = error_details_pb2.BadRequest()
                if any_detail.Unpack(br):
                    return sorted(v.field for v in br.field_violations)
    return []


def rpcs(channel):
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    events = event_service_pb2_grpc.EventServiceStub(channel)
    audit = audit_service_pb2_grpc.AuditServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    state = {}

    def create():
        v = videos.CreateVideo(video_service_pb2.CreateVideoRequest(video=video_pb2.Video(title="from python", tags=["Py"])), timeout=TIMEOUT)
        state["video"] = v
        check("CreateVideo", v.id and v.state == video_pb2.Video.STATE_PENDING_UPLOAD and list(v.tags) == ["py"], v.id)

    def create_invalid():
        try:
            videos.CreateVideo(video_service_pb2.CreateVideoRequest(video=video_pb2.Video(title="")), timeout=TIMEOUT)
            check("CreateVideo invalid", False, "accepted")
        except grpc.RpcError as e:
            fields = bad_request_fields(e)
            check("CreateVideo invalid", e.code() == grpc.StatusCode.INVALID_ARGUMENT and "video.title" in fields, f"{e.code()} {fields}")

    def get():
        v = videos.GetVideo(video_service_pb2.GetVideoRequest(id=state["video"].id), timeout=TIMEOUT)
        check("GetVideo", v.id == state["video"].id and v.title == "from python")

    def get_missing():
        try:
            videos.GetVideo(video_service_pb2.GetVideoRequest(id="00000000-0000-7000-8000-000000000000"), timeout=TIMEOUT)
            check("GetVideo missing", False, "found")
        except grpc.RpcError as e:
            check("GetVideo missing", e.code() == grpc.StatusCode.NOT_FOUND, e.code())

    def list_():
        page = videos.ListVideos(video_service_pb2.ListVideosRequest(page_size=1000), timeout=TIMEOUT)
        check("ListVideos", any(v.id == state["video"].id for v in page.videos), len(page.videos))

    def update():
        v = videos.UpdateVideo(
            video_service_pb2.UpdateVideoRequest(
                video=video_pb2.Video(id=state["video"].id, description="updated"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
            timeout=TIMEOUT,
        )
        state["video"] = v
        check("UpdateVideo", v.description == "updated" and v.title == "from python")

    def upload_content():
        data = b"python bytes " * 1000
        first = video_service_pb2.UploadVideoContentRequest(
            metadata=video_service_pb2.UploadMetadata(id=state["video"].id, content_type="video/mp4", checksum_sha256=hashlib.sha256(data).hexdigest())
        )
        chunks = [first] + [video_service_pb2.UploadVideoContentRequest(chunk=data[i : i + 4096]) for i in range(0, len(data), 4096)]
        v = videos.UploadVideoContent(iter(chunks), timeout=TIMEOUT)
        state["video"] = v
        check("UploadVideoContent", v.state == video_pb2.Video.STATE_UPLOADED and v.source.size_bytes == len(data), v.state)

    def presigned_upload():
        v = videos.CreateVideo(video_service_pb2.CreateVideoRequest(video=video_pb2.Video(title="presigned")), timeout=TIMEOUT)
        data = b"presigned bytes"
        up = videos.CreateUpload(
            video_service_pb2.CreateUploadRequest(id=v.id, content_type="video/mp4", size_bytes=len(data), checksum_sha256=hashlib.sha256(data).hexdigest()),
            timeout=TIMEOUT,
        )
        check("CreateUpload", up.upload_id and up.url, up.upload_id)
        req = urllib.request.Request(up.url, data=data, method="PUT", headers=dict(up.required_headers))
        with urllib.request.urlopen(req, timeout=TIMEOUT) as res:
            res.read()
        done = videos.CompleteUpload(video_service_pb2.CompleteUploadRequest(id=v.id, upload_id=up.upload_id), timeout=TIMEOUT)
        check("CompleteUpload", done.state == video_pb2.Video.STATE_UPLOADED, done.state)
        other = videos.CreateVideo(video_service_pb2.CreateVideoRequest(video=video_pb2.Video(title="aborted")), timeout=TIMEOUT)
        up2 = videos.CreateUpload(video_service_pb2.CreateUploadRequest(id=other.id, content_type="video/mp4", size_bytes=10), timeout=TIMEOUT)
        videos.AbortUpload(video_service_pb2.AbortUploadRequest(id=other.id, upload_id=up2.upload_id), timeout=TIMEOUT)
        check("AbortUpload", True)

    def list_events():
        page = events.ListEvents(event_service_pb2.ListEventsRequest(video_id=state["video"].id), timeout=TIMEOUT)
        check("ListEvents", any(e.type == "video.v1.VideoCreated" for e in page.events), [e.type for e in page.events])

    def watch_events():
        stream = events.WatchEvents(event_service_pb2.WatchEventsRequest(video_id=state["video"].id), timeout=TIMEOUT)
        first = next(stream)
        stream.cancel()
        check("WatchEvents", first.subject == state["video"].id, first.type)

    def list_audit():
        page = audit.ListAuditEvents(audit_service_pb2.ListAuditEventsRequest(page_size=10), timeout=TIMEOUT)
        check("ListAuditEvents", page is not None, len(page.audit_events))

    def delete():
        videos.DeleteVideo(video_service_pb2.DeleteVideoRequest(id=state["video"].id, etag=state["video"].etag), timeout=TIMEOUT)
        try:
            videos.GetVideo(video_service_pb2.GetVideoRequest(id=state["video"].id), timeout=TIMEOUT)
            check("DeleteVideo", False, "still found")
        except grpc.RpcError as e:
            check("DeleteVideo", e.code() == grpc.StatusCode.NOT_FOUND, e.code())

    def health_check():
        r = health.Check(health_pb2.HealthCheckRequest(service="video.v1.VideoService"), timeout=TIMEOUT)
        check("Health/Check", r.status == health_pb2.HealthCheckResponse.SERVING, r.status)
        w = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        first = next(w)
        w.cancel()
        check("Health/Watch", first.status == health_pb2.HealthCheckResponse.SERVING, first.status)

    def reflection():
        # ServerReflectionInfo with list_services (field 7) set to "", as raw bytes:
        # the reflection protos are not needed to see the services listed.
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        answer = next(call(iter([b"\x3a\x00"]), timeout=TIMEOUT))
        check("ServerReflectionInfo", b"video.v1.VideoService" in answer and b"video.v1.EventService" in answer)

    for name, fn in [
        ("CreateVideo", create),
        ("CreateVideo invalid", create_invalid),
        ("GetVideo", get),
        ("GetVideo missing", get_missing),
        ("ListVideos", list_),
        ("UpdateVideo", update),
        ("UploadVideoContent", upload_content),
        ("CreateUpload", presigned_upload),
        ("ListEvents", list_events),
        ("WatchEvents", watch_events),
        ("ListAuditEvents", list_audit),
        ("DeleteVideo", delete),
        ("Health", health_check),
        ("ServerReflectionInfo", reflection),
    ]:
        attempt(name, fn)


def abandon(channel):
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    outcomes = []
    for _ in range(5):
        try:
            videos.ListVideos(video_service_pb2.ListVideosRequest(page_size=1000), timeout=0.02)
            outcomes.append("OK")
        except grpc.RpcError as e:
            outcomes.append(e.code().name)
    emit(event="abandoned", outcomes=outcomes)
    for i in range(3):
        try:
            page = videos.ListVideos(video_service_pb2.ListVideosRequest(page_size=1), timeout=TIMEOUT)
            check(f"call {i + 1} after the abandoned ones", len(page.videos) == 1)
        except grpc.RpcError as e:
            check(f"call {i + 1} after the abandoned ones", False, f"{e.code().name}: {e.details()}")


def watch(channel, mode):
    events = event_service_pb2_grpc.EventServiceStub(channel)
    after, video_id = (sys.argv[3:5] + ["", ""])[:2]
    stream = events.WatchEvents(event_service_pb2.WatchEventsRequest(after=after, video_id=video_id))
    # Read what is already there; the call is open once its headers are in.
    stream.initial_metadata()
    emit(event="open")
    sys.stdin.readline()
    if mode == "watch-idle":
        try:
            for e in stream:
                check("an event after the quiet period", e.type != "", e.type)
                break
        except grpc.RpcError as e:
            check("an event after the quiet period", False, f"{e.code().name}: {e.details()}")
        stream.cancel()
    elif mode == "watch-cancel":
        stream.cancel()
    else:
        channel.close()
    emit(event="done")


def main():
    target, scenario = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(target)
    if scenario == "rpcs":
        rpcs(channel)
    elif scenario == "abandon":
        abandon(channel)
    else:
        watch(channel, scenario)
    emit(event="finished")
    sys.stdin.read()  # until the test closes stdin


if __name__ == "__main__":
    main()
