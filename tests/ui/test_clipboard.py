"""Copy helpers: code blocks from Markdown, the last reply, OSC 52 copy with a notice, copy menu."""

from __future__ import annotations

from textual.app import App

from mergechat.core.api import ChatMessage
from mergechat.core.markdown_blocks import CodeBlock, code_blocks
from mergechat.ui.clipboard import (
    CopyMenu,
    CopyTarget,
    copy_targets,
    copy_text,
    last_reply,
    message_targets,
)

REPLY = """Here you go:

```python
def f(x):
    return x + 1
```

Inline ```not a fence``` and then a tilde block:

~~~
echo hi
~~~

1. In a list:

   ```bash
   ls -l
     indented more
   ```
"""


def _codes(markdown: str) -> list[str]:
    return [block.code for block in code_blocks(markdown)]


def test_code_blocks_of_a_reply() -> None:
    assert _codes(REPLY) == [
        "def f(x):\n    return x + 1",
        "echo hi",
        "ls -l\n  indented more",
    ]
    assert [b.language for b in code_blocks(REPLY)] == ["python", "", "bash"]


def test_fence_rules() -> None:
    # A longer outer fence holds a shorter one; the other fence character does not close it.
    nested = "````md\n```py\nx\n```\n~~~\n````"
    assert code_blocks(nested) == [CodeBlock("md", "```py\nx\n```\n~~~")]
    # A reply cut off inside a block still gives the code so far.
    assert _codes("text\n```js\nlet a = 1;\nlet b") == ["let a = 1;\nlet b"]
    assert _codes("```\n```") == [""]
    assert _codes("no code here") == []


def test_last_reply_and_copy_targets() -> None:
    messages = [
        ChatMessage("user", "q"),
        ChatMessage("assistant", "first"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", ""),
    ]
    assert last_reply(messages) == "first"
    assert last_reply([ChatMessage("user", "q")]) is None
    targets = copy_targets(REPLY)
    assert [t.label for t in targets] == [
        f"The whole reply ({len(REPLY)} characters)",
        "Code block 1 (python, 2 lines)",
        "Code block 2 (1 line)",
        "Code block 3 (bash, 2 lines)",
    ]
    assert targets[0].text == REPLY and targets[3].text == "ls -l\n  indented more"
    assert copy_targets("") == []
    chosen = message_targets([*messages, ChatMessage("user", "a  long\nquestion " * 10)], 20)
    assert [t.label for t in chosen] == [
        "You: a long question a l…",
        "You: q2",
        "Assistant: first",
        "You: q",
    ]
    assert chosen[2].text == "first"


class Host(App[None]):
    """Records notifications instead of only showing them."""

    def __init__(self) -> None:
        super().__init__()
        self.notices: list[tuple[str, str]] = []
        self.picked: list[CopyTarget | None] = []

    def notify(self, message: str, **kwargs: object) -> None:  # type: ignore[override,unused-ignore]
        self.notices.append((message, str(kwargs.get("severity", "information"))))


async def test_copy_text_sends_osc52_and_confirms() -> None:
    app = Host()
    async with app.run_test():
        assert copy_text(app, "print('hé')", "code block 1") is True
        assert app.clipboard == "print('hé')"
        assert app.notices == [
            ("Copied code block 1 (11 characters) to the clipboard.", "information")
        ]
        assert copy_text(app, "", "the last reply") is False
        assert app.notices[-1] == ("Nothing to copy.", "warning")
        assert app.clipboard == "print('hé')"


async def test_copy_menu_by_digit_arrows_and_escape() -> None:
    targets = copy_targets(REPLY)
    app = Host()
    async with app.run_test() as pilot:
        app.push_screen(CopyMenu(targets), app.picked.append)
        await pilot.pause()
        await pilot.press("3")
        await pilot.pause()
        app.push_screen(CopyMenu(targets), app.picked.append)
        await pilot.pause()
        await pilot.press("down", "enter")
        await pilot.pause()
        app.push_screen(CopyMenu(targets), app.picked.append)
        await pilot.pause()
        await pilot.press("9", "escape")
        await pilot.pause()
        assert app.picked == [targets[2], targets[1], None]
