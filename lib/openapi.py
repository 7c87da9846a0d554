"""The OpenAPI document of the API, served at /api/openapi.json. tests/test_openapi.py keeps
it true: every route of every function is here with its methods, and every error code the
service can answer is listed."""

from __future__ import annotations

from typing import Any

ERROR_CODES = [
    "invalid_request", "unauthorized", "not_found", "method_not_allowed", "payload_too_large",
    "unsupported_media_type", "turn_in_progress", "lock_lost", "rate_limited",
    "daily_limit_reached", "agent_failed", "turn_timeout", "state_unavailable",
    "sandbox_unavailable", "auth_unavailable", "misconfigured", "internal_error",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": "#/components/responses/Error"} for status in statuses}


AUTH = [{"bearer": []}, {"devUser": []}]
CHAT = [{"name": "chat", "in": "path", "required": True, "schema": _ref("ChatId")}]
MESSAGE_PAGE = [
    {"name": "limit", "in": "query",
     "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Agent sessions",
        "version": "1.0.0",
        "description": "Long-lived Claude agent conversations for every signed-in user.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "HS256 JWT whose `sub` is the user id"},
            "devUser": {"type": "apiKey", "in": "header", "name": "X-User-Id",
                        "description": "AUTH_MODE=dev only (local development)"},
            "cronSecret": {"type": "http", "scheme": "bearer",
                           "description": "Bearer $CRON_SECRET"},
        },
        "schemas": {
            "Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string", "enum": ERROR_CODES},
                                   "message": {"type": "string"}},
                }},
            },
            "ChatRequest": {
                "type": "object",
                "properties": {
                    "prompt": {"type": "string", "minLength": 1,
                               "description": "at most MAX_PROMPT_CHARS characters"},
                    "chat_id": {"$ref": "#/components/schemas/ChatId"},
                    "id": {"$ref": "#/components/schemas/ChatId"},
                    "messages": {"type": "array", "description": "useChat's UI messages: the "
                                 "newest user message's text parts are the prompt, its `id` "
                                 "that message's id; earlier messages are not read"},
                    "trigger": {"type": "string",
                                "enum": ["submit-message", "regenerate-message"]},
                    "options": {"type": "object", "description": "only keys in CLIENT_OPTIONS"},
                },
                "description": "`prompt` (with `chat_id`) or a useChat body (`id`, `messages`); "
                               "without a chat id, the `default` conversation; other fields "
                               "are ignored.",
            },
            "ChatId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "Chat": {
                "type": "object",
                "properties": {
                    "id": {"$ref": "#/components/schemas/ChatId"}, "title": {"type": "string"},
                    "created_at": {"type": "number"}, "last_active_at": {"type": "number"},
                    "turns": {"type": "integer"}, "session_id": {"type": "string"},
                },
            },
            "Chats": {
                "type": "object",
                "properties": {
                    "chats": {"type": "array", "items": {"$ref": "#/components/schemas/Chat"}},
                    "total": {"type": "integer"}, "next_offset": {"type": ["integer", "null"]},
                },
            },
            "TurnResult": {
                "type": "object", "required": ["session_id", "text", "turn"],
                "properties": {
                    "chat_id": {"type": "string"}, "message_id": {"type": "string"},
                    "session_id": {"type": "string"}, "text": {"type": "string"},
                    "turn": {"type": "integer"},
                    "usage": {"type": "object", "additionalProperties": {"type": "number"}},
                    "cost_usd": {"type": ["number", "null"]},
                    "notices": {"type": "array", "items": {"type": "object", "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}},
                },
            },
            "Session": {
                "type": "object",
                "properties": {
                    "chats": {"type": "integer"},
                    "session_id": {"type": "string", "description": "of the default chat"},
                    "turns": {"type": "integer", "description": "of the default chat"},
                    "created_at": {"type": "number"}, "last_active_at": {"type": "number"},
                    "sandbox": {"type": "object", "properties": {"status": {
                        "type": "string", "enum": ["running", "stopped", "missing"]}}},
                },
            },
            "Messages": {
                "type": "object",
                "properties": {
                    "messages": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"},
                        "role": {"type": "string", "enum": ["user", "assistant"]},
                        "text": {"type": "string"},
                        "created_at": {"type": ["string", "null"]}}}},
                    "next_before": {"type": ["integer", "null"]},
                },
            },
            "CleanupReport": {
                "type": "object",
                "properties": {name: {"type": "integer"} for name in (
                    "stopped", "expired", "chats_expired", "orphans_removed", "skipped_busy",
                    "errors",
                    "duration_ms")} | {"more": {"type": "boolean"}},
            },
        },
        "responses": {"Error": _json(_ref("Error"), "An error; see `error.code`")},
    },
    "paths": {
        "/api/chat": {"post": {
            "summary": "One turn of one of the caller's conversations",
            "security": AUTH,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("ChatRequest")}}},
            "responses": {
                "200": {"description": "The turn's result; with `Accept: text/event-stream` or a"
                                       " useChat body (`messages`), the AI SDK UI message"
                                       " stream v1 ending in [DONE]",
                        "content": {"application/json": {"schema": _ref("TurnResult")},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 409, 413, 415, 429, 500, 502, 503, 504),
            },
        }},
        "/api/chat/<chat>/stream": {"get": {
            "summary": "The running turn's stream again (useChat resume)", "security": AUTH,
            "parameters": [*CHAT, {"name": "Last-Event-ID", "in": "header",
                                   "schema": {"type": "string"},
                                   "description": "continue after this part"}],
            "responses": {"200": {"description": "The UI message stream, from the start or "
                                                 "after Last-Event-ID, until [DONE]",
                                  "content": {"text/event-stream": {"schema": {
                                      "type": "string"}}}},
                          "204": {"description": "No turn runs"},
                          **_errors(400, 401, 503)},
        }},
        "/api/chat/<chat>/stop": {"post": {
            "summary": "Stop the running turn (it keeps what it said)", "security": AUTH,
            "parameters": CHAT,
            "responses": {"202": _json({"type": "object"}, "The turn is stopping"),
                          "204": {"description": "Nothing runs"},
                          **_errors(400, 401, 503)},
        }},
        "/api/session": {
            "get": {"summary": "The caller: their conversations and sandbox", "security": AUTH,
                    "responses": {"200": _json(_ref("Session"), "The record"),
                                  **_errors(401, 404, 503)}},
            "delete": {"summary": "Forget every conversation and the sandbox", "security": AUTH,
                       "responses": {"204": {"description": "Forgotten"},
                                     **_errors(401, 409, 503)}},
        },
        "/api/session/messages": {"get": {
            "summary": "The default conversation's messages", "security": AUTH,
            "parameters": MESSAGE_PAGE,
            "responses": {"200": _json(_ref("Messages"), "A page of messages, oldest first"),
                          **_errors(400, 401, 404, 503)},
        }},
        "/api/chats": {"get": {
            "summary": "The caller's conversations, newest activity first", "security": AUTH,
            "parameters": [
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {"200": _json(_ref("Chats"), "A page of conversations"),
                          **_errors(400, 401, 503)},
        }},
        "/api/chats/<chat>": {
            "get": {"summary": "One conversation", "security": AUTH, "parameters": CHAT,
                    "responses": {"200": _json(_ref("Chat"), "The conversation"),
                                  **_errors(400, 401, 404, 503)}},
            "patch": {"summary": "Rename a conversation", "security": AUTH, "parameters": CHAT,
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"type": "object", "required": ["title"], "properties": {
                              "title": {"type": "string", "maxLength": 200}}}}}},
                      "responses": {"200": _json(_ref("Chat"), "The renamed conversation"),
                                    **_errors(400, 401, 404, 413, 415, 503)}},
            "delete": {"summary": "Delete a conversation (the sandbox stays)", "security": AUTH,
                       "parameters": CHAT,
                       "responses": {"204": {"description": "Deleted"},
                                     **_errors(400, 401, 404, 409, 503)}},
        },
        "/api/chats/<chat>/fork": {"post": {
            "summary": "A new conversation whose history ends at a message", "security": AUTH,
            "parameters": CHAT,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["message_id"], "properties": {
                    "message_id": {"type": "string"},
                    "chat_id": {"$ref": "#/components/schemas/ChatId"}}}}}},
            "responses": {"201": _json(_ref("Chat"), "The new conversation"),
                          **_errors(400, 401, 404, 409, 413, 415, 503)},
        }},
        "/api/chats/<chat>/messages": {"get": {
            "summary": "A conversation's messages, with the ids the client saw",
            "security": AUTH, "parameters": [*CHAT, *MESSAGE_PAGE],
            "responses": {"200": _json(_ref("Messages"), "A page of messages, oldest first"),
                          **_errors(400, 401, 404, 503)},
        }},
        "/api/health": {"get": {
            "summary": "Is the state store reachable?",
            "responses": {"200": _json({"type": "object"}, "Healthy"), **_errors(500, 503)},
        }},
        "/api/cron/cleanup": {"get": {
            "summary": "The scheduled sweep", "security": [{"cronSecret": []}],
            "responses": {"200": _json(_ref("CleanupReport"), "What the run did"),
                          **_errors(401, 500, 503)},
        }},
        "/api/openapi.json": {"get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
        }},
    },
}
