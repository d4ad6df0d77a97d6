"""IMHI reference entries say what each gold label answers (the Similar pane's citation)."""

from __future__ import annotations

import csv

from engine.knowledge.reference import imhi_entries, short_label


def test_yes_no_labels_name_the_risk_or_dimension_they_answer():
    assert (
        short_label(
            "Does the post show risk of perceived burdensomeness?",
            "Yes, the post shows this risk.",
        )
        == "perceived burdensomeness: yes"
    )
    assert (
        short_label(
            "Does the social wellness dimension exist in the post?",
            "No, this wellness dimension does not exist in the post.",
        )
        == "social wellness: no"
    )
    # labels that already say what they answer stay as they are
    for question, label in [
        ("Does the poster suffer from stress?", "Yes, the poster suffers from stress."),
        (
            "What is the stress cause of this post?",
            "This post shows the stress cause related to school.",
        ),
    ]:
        assert short_label(question, label) == label


def test_an_irf_post_asked_about_two_risks_says_which_answer_is_which(tmp_path):
    """It read "No, the post does not show this risk.; Yes, the post shows this risk."."""
    folder = tmp_path / "train" / "Irf"
    folder.mkdir(parents=True)
    post = "Nobody would notice if I was gone, I only cause my family trouble."
    with (folder / "val.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query", "gpt-3.5-turbo"])
        for risk, answer in [
            ("thwarted belongingness", "No, the post does not show this risk."),
            ("perceived burdensomeness", "Yes, the post shows this risk."),
        ]:
            writer.writerow(
                [
                    f'Consider this post: "{post}" Question: Does the post show risk of {risk}?',
                    f"{answer} Reasoning: the poster says so.",
                ]
            )
    [entry] = imhi_entries(tmp_path)
    assert entry.label == "thwarted belongingness: no; perceived burdensomeness: yes"
    assert entry.citation_label.endswith(
        "thwarted belongingness: no; perceived burdensomeness: yes"
    )
