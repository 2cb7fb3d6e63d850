import t from "tap";
import { create } from "@bufbuild/protobuf";
import { VideoSchema } from "../../gen/video/v1/video_pb.js";
t.test("x", async (t) => { t.equal(create(VideoSchema, { title: "a" }).title, "a"); });
