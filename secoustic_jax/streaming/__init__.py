"""Streaming inference: codec step functions, streaming mel front end, chunked vocoding,
and a batched multi-stream server loop (docs/streaming.md)."""
