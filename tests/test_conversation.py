from lib.conversation import messages_from, page


def user(uuid: str, content, **extra):
    return {"type": "user", "uuid": uuid, "timestamp": "t", "message": {"role": "user",
                                                                         "content": content}, **extra}


def assistant(uuid: str, message_id: str, *blocks):
    return {"type": "assistant", "uuid": uuid, "timestamp": "t",
            "message": {"role": "assistant", "id": message_id, "content": list(blocks)}}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def test_only_what_people_said_and_read_is_kept_one_message_per_answer():
    entries = [
        {"type": "queue-operation"},
        user("u1", [text("<system-reminder>ctx</system-reminder>"), text("<div> is a tag?")]),
        {"type": "attachment", "uuid": "a1"},
        assistant("a1", "m1", text("Yes, ")),
        assistant("a2", "m1", {"type": "tool_use", "id": "t", "name": "Read", "input": {}}),
        user("u2", [{"type": "tool_result", "tool_use_id": "t", "content": "file"}]),
        assistant("a3", "m1", text("it is.")),
        user("u3", "meta", isMeta=True),
        assistant("a4", "m2", text("Separate message.")),
        user("u4", "sidechain", isSidechain=True),
    ]
    assert [(m.role, m.text) for m in messages_from(entries)] == [
        ("user", "<div> is a tag?"), ("assistant", "Yes, it is.\n\nSeparate message.")]


def test_paging_walks_back_from_the_newest():
    items = list(range(5))
    assert page(items, 2, None) == ([3, 4], 3)
    assert page(items, 2, 3) == ([1, 2], 1)
    assert page(items, 2, 1) == ([0], None)
    assert page(items, 10, 99) == (items, None)
