"""GET /api/openapi.json: the API's OpenAPI document. (vercel.json rewrites it to this
function; both paths are routed, as Vercel may show either.)"""

from flask import Response

from api._http import create_app, json_response
from lib.openapi import DOCUMENT

app = create_app(__name__)


@app.get("/api/openapi.json")
@app.get("/api/openapi")
def openapi() -> Response:
    return json_response(DOCUMENT)
