"""OpenAPI post-processing: every operation documents the API's error answers, so a client (and
schemathesis' status-code check) knows a 400 or 404 is part of the contract, not a surprise.

400: bad input (body, query, parser errors), with ``errors`` naming the fields; 404: an object that
does not exist or is not yours (the same answer); 409: a result written into a worker run."""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "field path -> messages",
        },
    },
    "required": ["detail"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

# POST endpoints that take results only for external runs (webapp.api.common._external_run_for_write)
EXTERNAL_ONLY_WRITES = ("metrics", "samples", "evaluations", "checkpoints")


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.setdefault("400", _error("invalid input: `errors` names the fields"))
            paged = any(p.get("name") == "page" for p in operation.get("parameters", []))
            if "{" in path or paged:  # a page past the last one is a 404 too
                responses.setdefault("404", _error("no such object among yours (or no such page)"))
            if method == "post" and path.rstrip("/").rsplit("/", 1)[-1] in EXTERNAL_ONLY_WRITES:
                responses.setdefault("409", _error("a worker run: only external runs take results"))
    return result
