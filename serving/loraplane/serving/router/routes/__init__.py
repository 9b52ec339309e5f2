"""The router's HTTP API by concern, one FastAPI router each: the OpenAI API, the admin API, health and metrics."""

READ = ["GET", "HEAD"]  # the methods of every read-only route: HEAD wherever GET, as Starlette's own routes answer
