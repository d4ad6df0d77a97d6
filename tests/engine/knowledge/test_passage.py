"""The passage the Similar pane shows for a match: the sentence that shares most words with
the statement, never a bare item number."""

from __future__ import annotations

from engine.knowledge.text import best_passage, sentences, tokenize


def test_a_numbered_advice_list_is_not_cut_at_its_numbers():
    text = "分手以后，我每天都哭。\n症状类型：关系丧失后的低落\n建议：1. 按时吃饭 2. 和朋友见面"
    assert sentences(text)[-1] == "建议：1. 按时吃饭 2. 和朋友见面"
    english = "I sleep badly. Advice: 1. Keep a sleep diary. 2. Walk daily."
    assert sentences(english) == [
        "I sleep badly.",
        "Advice: 1. Keep a sleep diary.",
        "2. Walk daily.",
    ]
    assert "Keep a sleep diary" in best_passage(english, tokenize("sleep diary"))


def test_the_passage_is_the_sentence_sharing_most_words():
    text = "My dog died last month. Since then I cannot sleep at night. Work is fine."
    assert best_passage(text, tokenize("I can't sleep at night")).startswith(
        "Since then I cannot sleep at night."
    )
