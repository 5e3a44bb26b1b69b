-- wrk script: POST the file named by the BODY_FILE environment variable as JSON.
--   BODY_FILE=body.json wrk -t1 -c64 -d5s -s bench/post.lua http://127.0.0.1:8501/v1/models/m:predict
-- Responses other than 200 are counted by wrk as "Non-2xx or 3xx responses".
-- With INFERENCE_HEADER_LENGTH set, the body is an Open Inference Protocol request with
-- binary tensor data: that many bytes of JSON, then the tensors' raw bytes.
wrk.method = "POST"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local header_length = os.getenv("INFERENCE_HEADER_LENGTH")
if header_length then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
