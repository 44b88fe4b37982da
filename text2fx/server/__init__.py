"""`text2fx serve`: a local HTTP server that keeps the engine loaded for scripts (a DAW's Python, shell loops).

`cli` starts it (`text2fx serve`) and sends the command's jobs to it (`text2fx --server`); `app` is the HTTP
server, its bounded job queue and the worker thread that owns the engine; `protocol` turns a request's JSON
into a checked pipeline job and a finished job into the answer. Clients use `text2fx.client` (standard library
only), which also describes the wire format.
"""
