"""Issue 18 item 8: the sentence classifier behind the risk rules.

It flags paraphrases the rules cannot reach, quoting the sentence; idioms, grief about someone
else and medication questions stay unflagged; without its weights the rules still stand.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from engine.trust import risk, risk_classifier
from engine.trust.risk import assess, assess_rules, classifier_error
from engine.trust.risk_classifier import ngram_ids, sentence_spans

S = "suicide_self_harm"

# The issue's four phrasings (and their Chinese counterparts): they flag, quoting the sentence.
ISSUE = [
    "it would be easier if I just didn't wake up in the morning",
    "I wish I could just not wake up",
    "I wish I could just disappear",
    "last week I looked up how many of my wife's sleeping pills it would take",
    "要是明天早上醒不过来就好了",
    "上周我查了一下要吃多少片我妻子的安眠药才够",
]

# Paraphrases the rules do not match (asserted below, so the test shows the classifier's
# work): training sentences, so this guards the plumbing (sentence split, threshold, quoted
# evidence), not generalisation; that is test_risk_classifier_recall.py's job.
PARAPHRASES = [
    "I bought a rope last week and it's sitting in my closet.",
    "Every single day I wake up and the first thing I feel is disappointment that I'm still here.",
    "每天醒来第一个感觉就是失望，怎么还活着。",
    "今天跟弟弟告了别，他不知道那是最后一次。",
]

# Hard negatives named in the brief: idioms, grief about someone else, medication questions.
HARD_NEGATIVES = [
    "I'm dying to see it.",
    "This job is killing me.",
    "I could just disappear into a book for the whole weekend.",
    "My grandmother passed away last month and I still cry when I see her handwriting.",
    "How many milligrams of melatonin is it safe to take in one night?",
    "Can I take ibuprofen together with my sertraline?",
    "I slept through my alarm and didn't wake up until noon.",
    "I'd kill for a decent cup of coffee right now.",
    "I would never kill myself, my kids mean everything to me.",
    "今天加班到十点，真的要累死了。",
    "好久不见，想死你了！",
    "奶奶上个月去世了，我到现在还是很难过。",
    "医生说这个安眠药一次只能吃一片。",
    "周末想睡到自然醒，谁也别叫我。",
]


def suicide_flags(text: str):
    return [f for f in assess(text) if f.category == S]


@pytest.mark.parametrize("phrase", ISSUE)
def test_issue_phrasings_flag_with_the_sentence_quoted(phrase):
    text = f"We talked about her week. {phrase}. Then we talked about work."
    flags = suicide_flags(text)
    assert flags, phrase
    flag = flags[0]
    assert phrase in flag.evidence
    assert text[flag.start : flag.end] == flag.evidence
    assert "work" not in flag.evidence  # the sentence, not the whole statement


@pytest.mark.parametrize("sentence", PARAPHRASES)
def test_classifier_flags_a_paraphrase_the_rules_miss(sentence):
    text = f"First session after the move. {sentence} She changed the subject after that."
    assert not [f for f in assess_rules(text) if f.category == S]  # the rules miss it
    flags = suicide_flags(text)
    assert [f.source for f in flags] == ["classifier"]
    flag = flags[0]
    assert flag.evidence == sentence
    assert text[flag.start : flag.end] == sentence
    assert (flag.phrase_start, flag.phrase_end) == (flag.start, flag.end)
    assert flag.severity == "medium" and flag.rule == "classifier"
    assert "classifier" in risk.risk_audit_detail(flags)  # audited as such, never the quote
    assert sentence not in risk.risk_audit_detail(flags)


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negatives_do_not_flag(text):
    assert not suicide_flags(text), text


def test_a_rule_flag_is_not_doubled_by_the_classifier():
    text = "I want to kill myself. I have the pills ready."
    flags = suicide_flags(text)
    first = [f for f in flags if f.start == 0]
    assert len(first) == 1 and first[0].source == "rules"


def test_without_weights_the_rules_still_stand(monkeypatch):
    def broken():
        raise FileNotFoundError("risk_classifier.npz")

    monkeypatch.setattr(risk_classifier, "classifier", broken)
    text = "I want to kill myself. " + PARAPHRASES[0]
    flags = suicide_flags(text)
    assert [f.source for f in flags] == ["rules"]
    assert "risk_classifier.npz" in (classifier_error() or "")
    assert assess(text, classifier=False) == assess_rules(text)


def test_weights_ship_with_the_package_and_score_in_range():
    data = importlib.resources.files("engine.trust").joinpath("risk_classifier.npz").read_bytes()
    clf = risk_classifier.load(data)
    assert 0.0 < clf.threshold < 1.0
    assert clf.sparse.shape == (1 << risk_classifier.HASH_BITS,)
    scores = clf.scores(["I wish I could just not wake up.", "The bus was late again."])
    assert scores[0] > scores[1] and np.all((scores >= 0) & (scores <= 1))


def test_sentence_spans_cover_chinese_english_and_long_run_ons():
    text = "Hi there. I wish I could just not wake up! 我不想活了。好的\n\nok"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Hi there.",
        "I wish I could just not wake up!",
        "我不想活了。",
        "好的",
        "ok",
    ]
    long = "and then I walked home, " * 40
    spans = sentence_spans(long)
    assert len(spans) > 1 and all(b - a <= 2 * risk_classifier.MAX_CHARS for a, b in spans)


def test_ngrams_are_case_and_apostrophe_insensitive_and_cover_chinese():
    assert np.array_equal(ngram_ids("I DON’T want"), ngram_ids("i don't want"))
    assert len(ngram_ids("不想活")) == 3 + 2 + 1
    assert len(ngram_ids("")) == 0


def test_the_seed_case_is_not_a_risk_statement(seed_case_zh):
    """The brief's worked example: exam distress and tears, no self-harm. The first weights
    flagged its "每次想到都能落泪" sentence (crying read as risk); hard negatives of distress
    without risk (data/risk_sentences/en_i, zh_j) were added to the training split."""
    from engine.trust import risk

    statement = seed_case_zh["counseling_question"]["statement"]
    assert risk.assess(statement) == []


def test_chinese_word_ngrams_are_opt_in_and_survive_save_and_load(tmp_path):
    """Weights fitted with jieba's Chinese words (``zh_words``) score with them; older weights
    (no such field) keep the character n-grams they were fitted on."""
    text = "我觉得自己什么都做不好"
    chars, words = ngram_ids(text), ngram_ids(text, zh_words=True)
    assert set(chars) < set(words)
    assert set(ngram_ids("I feel fine")) == set(ngram_ids("I feel fine", zh_words=True))
    shipped = risk_classifier.classifier()
    path = tmp_path / "w.npz"
    from dataclasses import replace

    risk_classifier.save(replace(shipped, zh_words=True), path)
    assert risk_classifier.load(path.read_bytes()).zh_words is True
    risk_classifier.save(shipped, path)
    assert risk_classifier.load(path.read_bytes()).zh_words is shipped.zh_words
