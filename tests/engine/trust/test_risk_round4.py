"""Issue 18 item 8, fourth round: the false flags read on dev no-disorder posts (IMHI *val* and
*train* DR / dreaddit / SAD, Irf dev posts without risk) and the fixes that generalise.

* A pronoun in a first-person post means the person named before it, not the writer: "The
  mother of my daughter ... she has threatened to kill herself" (a DR val post). A counselor's
  third-person note about the client ("She says she has thought about killing herself", or one
  that names the client) still flags.
* Bereavement is not the writer's risk: "the loss of someone I love to suicide", "I lost my
  brother to suicide", "他去年自杀身亡".
* Idioms: "cutting myself off", "cut myself some slack", "burnt myself out", "$200 off
  myself", "I was going to die young" (a belief, not a wish).
* Someone else cutting ("my brother has been cutting his arms") does not flag; the client's
  own ("I've been cutting my arms") does.

Every sentence here is written for the test (dev-like, never a test-split sentence).
"""

from __future__ import annotations

import pytest

from engine.trust.risk import assess, assess_rules

S = "suicide_self_harm"


def suicide_flags(text: str, rules_only: bool = False):
    flags = assess_rules(text) if rules_only else assess(text)
    return [f for f in flags if f.category == S]


SOMEONE_ELSE_BY_PRONOUN = [
    "My mum is struggling since the divorce. Last night she threatened to kill herself again "
    "and I didn't know what to say.",
    "The mother of my kids drinks a lot. Sometimes she says she will kill herself if I leave.",
    "I found a note in my brother's room. He has been cutting again and I'm scared for him.",
    "我妈妈最近情绪很差。昨天她又说不想活了，我不知道该怎么办。",
    "我哥失业以后一直很消沉，他说他想过自杀，我很担心他。",
]

STILL_THE_CLIENT = [
    # a counselor's note in the third person: nobody says "I"
    "She says she has thought about killing herself since her mother died.",
    "Her mother died in March. She says she has thought about suicide.",
    # a counselor's note written with "I" ("met with her", "in session", "she reported")
    "I met with her today. Her mother died last month. She said she has been thinking about "
    "killing herself.",
    "In session I asked about her mum. She reported that she wants to kill herself.",
    # a note that names the client keeps the pronoun the client's, even with a relation before
    "Client's father left in May. He says he has been cutting again.",
    # "she" cannot be the dad named before it
    "My dad left when I was ten. She says she wants to kill herself. - note about my client",
    # the writer's own risk beside a relation
    "My mom doesn't know that I want to kill myself.",
    "I asked her how she was and she said she has thought about killing herself.",
    "她说她上个月试过自杀。",
    # a generic "someone ... they" is the writer speaking of themself (an Irf val post)
    "Time to show everyone what happens when you treat someone so badly that they want to "
    "kill themselves. I'm done.",
    # "ive" (no apostrophe) is the writer too
    "My sister says the school counsellors got fired and now ive fallen back into self harm.",
]


@pytest.mark.parametrize("text", SOMEONE_ELSE_BY_PRONOUN)
def test_a_pronoun_for_a_named_relation_is_not_the_writer(text):
    assert not suicide_flags(text, rules_only=True), text


@pytest.mark.parametrize("text", STILL_THE_CLIENT)
def test_the_client_in_the_third_person_still_flags(text):
    assert suicide_flags(text, rules_only=True), text


BEREAVED = [
    "I have been lucky that I have not suffered the loss of someone I love to suicide.",
    "I lost my older brother to suicide three years ago and the anniversary is hard.",
    "My uncle died by suicide when I was twelve.",
    "Our group is for people coping with suicide loss.",
    "他去年自杀身亡，我到现在都走不出来。",
]

NOT_BEREAVED = [
    "I lost my job and now I keep thinking about suicide.",
    "Since I lost her I have been thinking about killing myself.",
    "我差点自杀身亡，是室友救了我。",
]


@pytest.mark.parametrize("text", BEREAVED)
def test_bereavement_is_not_the_writers_risk(text):
    assert not suicide_flags(text, rules_only=True), text


@pytest.mark.parametrize("text", NOT_BEREAVED)
def test_the_writers_own_risk_beside_a_loss_still_flags(text):
    assert suicide_flags(text, rules_only=True), text


IDIOMS = [
    "I've been cutting myself off from social media until my exams are over.",
    "My therapist says I need to cut myself some slack.",
    "I totally burnt myself out at work this quarter.",
    "I paid $200 off myself and my parents covered the rest.",
    "As a kid I had the weird idea that I was going to die young.",
    "During the panic attack I honestly thought I was going to die.",
]


@pytest.mark.parametrize("text", IDIOMS)
def test_idioms_do_not_flag(text):
    assert not suicide_flags(text, rules_only=True), text


IDIOM_NEIGHBOURS = [
    "I've been cutting myself again.",
    "I burnt myself with a lighter last night.",
    "I'm going to off myself.",
    "I want to die.",
    "I'm going to die tonight by my own hand.",
]


@pytest.mark.parametrize("text", IDIOM_NEIGHBOURS)
def test_the_literal_forms_still_flag(text):
    assert suicide_flags(text, rules_only=True), text


def test_someone_else_cutting_their_arms_is_not_flagged_and_the_clients_own_is():
    assert not suicide_flags("My little brother has been cutting his arms, what do I do?")
    mine = suicide_flags("I've been cutting my arms again.")
    assert mine and "cutting my arms" in mine[0].evidence


# Phrasings the rules missed on dev (Irf dev risk posts, zh_n), written anew for this test,
# each with the words the flag must quote.
NEW_REACH = [
    ("Honestly why not end it now before things get worse.", "end it now"),
    ("I don't want to be here any more.", "be here any more"),
    ("Most days I just can't be here anymore.", "can't be here anymore"),
    ("I don't want to have to exist anymore.", "exist"),
    ("Lately I'm thinking a lot about dying.", "about dying"),
    ("Every morning on the motorway I hope I get hit by a lorry.", "hope I get hit"),
    ("Last night I slit the skin of my forearm again.", "my forearm"),
    ("我只想睡过去，永远别醒。", "永远别醒"),
    ("这个世界少了我一个也不会怎样。", "少了我一个"),
    ("我好羡慕那些出车祸就这么走了的人。", "车祸"),
    ("下班后我常常站在桥上，想着水有多深。", "水有多深"),
    ("要是哪天我不见了，你们别来找我。", "别来找我"),
]


@pytest.mark.parametrize(("text", "words"), NEW_REACH)
def test_new_phrasings_flag_with_the_words_quoted(text, words):
    flags = suicide_flags(text, rules_only=True)
    assert flags, text
    assert flags[0].evidence == text.strip()
    assert words in text[flags[0].phrase_start : flags[0].phrase_end], flags[0]


NEW_REACH_NEIGHBOURS = [
    "I'm not thinking about dying, I'm thinking about my exams.",
    "I hope I get hired by that firm.",
    "I sliced my finger chopping onions.",
    "Why not go out for dinner tonight?",
    "他昨天出车祸走了，我到现在都不敢相信。",
    "我不见了一支笔，你们有谁看到吗？",
]


@pytest.mark.parametrize("text", NEW_REACH_NEIGHBOURS)
def test_new_phrasings_leave_their_neighbours_alone(text):
    assert not suicide_flags(text, rules_only=True), text


# Second batch, from the dev posts en_q / zh_q (written for this round), again new wording.
MORE_REACH = [
    ("Honestly my cat is the only reason I'm still alive.", "only reason I'm still alive"),
    ("I'm so tired of waking up every day.", "tired of waking up"),
    ("I woke up and was gutted that I'm still here.", "gutted that I'm still here"),
    ("Does anyone know how long it would take to drown?", "how long it would take to drown"),
    ("Does anyone else want to die most mornings?", "want to die"),
    ("I've already decided how I'll do it.", "decided how I'll do it"),
    (
        "Sometimes I think I could just take all of the tablets in the drawer.",
        "take all of the tablets",
    ),
    ("If I go on Friday nobody will find me until Monday.", "nobody will find me until"),
    ("I took way more pills than the doctor said, on purpose.", "took way more pills than"),
    ("Some nights I think about walking into the sea.", "walking into the sea"),
    ("指甲掐进肉里，越疼越觉得安心。", "越疼越觉得安心"),
    ("我站在河边，很想一直往深处走。", "往深处走"),
]


@pytest.mark.parametrize(("text", "words"), MORE_REACH)
def test_more_phrasings_flag_with_the_words_quoted(text, words):
    flags = suicide_flags(text, rules_only=True)
    assert flags, text
    assert words in text[flags[0].phrase_start : flags[0].phrase_end], flags[0]


HISTORY = [
    "I was suicidal as a teenager. I'm 38 now and doing well, two kids and a job I love.",
    "I used to self harm in high school but I've been clean for over ten years.",
    "年轻时我也想过轻生，现在走出来了，生活挺好的。",
    # someone in the news is not the writer
    "The news about that teenager who took her own life made me so angry.",
]

HISTORY_COMING_BACK = [
    "I used to self harm in high school, I recovered, but lately the urges are back.",
    "I was suicidal in my twenties and now I feel it again.",
    "年轻时我也想过轻生，后来走出来了，最近又开始想了。",
]


@pytest.mark.parametrize("text", HISTORY)
def test_distant_history_after_recovery_is_not_current_risk(text):
    assert not suicide_flags(text, rules_only=True), text


@pytest.mark.parametrize("text", HISTORY_COMING_BACK)
def test_history_that_came_back_still_flags(text):
    assert suicide_flags(text, rules_only=True), text


# Quoted words: a song, a film or someone else who said them (read on IMHI train dreaddit posts:
# '"I'm going to off myself if ..." he yelled' about a delusional partner).
QUOTED_FROM_OTHERS = [
    'The lyrics "I just want to die tonight" from that song have been stuck in my head all day.',
    "My brother is unwell. Last night he yelled at me \u201cI\u2019m going to kill myself if you "
    "leave!\u201d",
    '"I want to die," my mum screamed at us again during the row.',
    "歌里唱的「活着没有意义」让我哭了一晚上。",
    "我妈最近很不好，她说「我不想活了」，我不知道怎么办。",
]
QUOTED_BY_THE_CLIENT = [
    'I told her "I want to die" and she laughed.',
    'She said "I want to kill myself" twice in session.',
    "我跟她说「我真的不想活了」。",
    "她说「我真的不想活了」。",
]


@pytest.mark.parametrize("text", QUOTED_FROM_OTHERS)
def test_quoted_from_a_song_or_someone_else_is_not_flagged(text):
    assert not suicide_flags(text), text


@pytest.mark.parametrize("text", QUOTED_BY_THE_CLIENT)
def test_the_clients_own_quoted_words_still_flag(text):
    assert suicide_flags(text, rules_only=True), text


@pytest.mark.parametrize(
    "text",
    [
        "Honestly nobody would notice if I disappeared for a week.",
        "I'm sick of life being so expensive.",
    ],
)
def test_everyday_absence_and_complaint_do_not_flag(text):
    assert not suicide_flags(text, rules_only=True), text


@pytest.mark.parametrize(
    "text",
    ["Nobody would notice if I disappeared.", "I'm sick of life."],
)
def test_their_risk_forms_still_flag(text):
    assert suicide_flags(text, rules_only=True), text


# The English classifier reacts to "alive" and "better" whatever the sense (read on IMHI
# MultiWD and Irf val posts): hopeful sentences with no negation and no word of death or harm
# are not flags; hopeless ones in the same words still reach the classifier.
HOPEFUL = [
    "Since I started running I feel alive again.",
    "This year I'm going to make the most I can of being alive.",
    "I've finally found the one, she makes it all better.",
]


@pytest.mark.parametrize("text", HOPEFUL)
def test_hopeful_sentences_are_not_classifier_flags(text):
    assert not suicide_flags(text), text


def test_hopeless_words_beside_hope_keep_the_gate_open():
    import engine.trust.risk as risk

    assert risk._passes_gate("I wish I hadn't wasted years thinking things could get better.")
    assert risk._passes_gate("I'd feel better if I were gone.")
    assert not risk._passes_gate("She makes everything better.")


# Read on IMHI DR / MultiWD val posts (dev): negation that is not one, and plain forms missed.
NOT_NEGATION = [
    ("Some nights it's so hard trying not to hurt myself.", "hurt myself"),
    ("I have never wanted to die more than I do today.", "wanted to die"),
    ("I won't kill myself but part of me really wants to.", "kill myself"),
    ("Maybe I should be dead instead of him.", "should be dead"),
    ("I hate being alive.", "hate being alive"),
    ("Honestly my dog is the only reason I'm not dead.", "only reason I'm not dead"),
    ("I just don't care enough to live anymore.", "care enough to live"),
]
STILL_NEGATION = [
    "I won't kill myself, but I do need help.",
    "I am not suicidal but I want to talk about my anxiety.",
    "I would never hurt myself.",
    "I tried not to laugh when he fell over.",
]


@pytest.mark.parametrize(("text", "words"), NOT_NEGATION)
def test_effort_intensifier_and_taken_back_negation_still_flag(text, words):
    flags = suicide_flags(text, rules_only=True)
    assert flags, text
    assert words in text[flags[0].phrase_start : flags[0].phrase_end], flags[0]


@pytest.mark.parametrize("text", STILL_NEGATION)
def test_plain_negation_still_negates(text):
    assert not suicide_flags(text, rules_only=True), text
