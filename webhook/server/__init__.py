"""The only package that imports FastAPI, Starlette or uvicorn."""
