"""``skillsoup serve``: an OpenAI-compatible server with skill routing and continuous batching.

    engine.py    Engine: many requests decoded together, each batch row with its own mixed state;
                 events.py what a request hears (pieces, then Done or Failed)
    backend.py   LocalBackend: admission (429), batched routing, preparing, the engine, in this process
    protocol.py  the OpenAI request/response shapes and how a request becomes a query
    app.py       the FastAPI app (chat, completions, models, health, metrics); admin.py skill edits
    security.py  bind policy, bearer key, bounded body;  errors.py  errors in OpenAI's shape
    metrics.py   Prometheus;  server.py  run with uvicorn;  ray_app.py  replicas on Ray Serve
Heavy parts (FastAPI, uvicorn, Ray) import on use: ``pip install 'skillsoup[serve]'`` (``[ray]``).
"""
