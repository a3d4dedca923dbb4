"""The HTTP shell: FastAPI app factory, one router per resource, one error mapping."""
