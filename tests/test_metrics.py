import pytest
from rouge_score import rouge_scorer

from models.metrics import TOKENIZERS, read_references, rouge

KO = "친구가 학교에 갔다"


def test_default_tokenizer_zeroes_korean_but_ours_does_not():
    default = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    assert default.score(KO, KO)["rouge1"].fmeasure == 0.0  # the trap
    for mode in ("morpheme", "whitespace"):  # rouge and rouge-stem are rouge-score's own, for English
        scores = rouge([KO], [[KO]], tokenize=mode)
        assert scores == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "mean": 1.0}


# (reference, prediction): SAMSum-like English, with punctuation glued to words and inflected forms
ENGLISH = [
    ("Amanda baked cookies and will bring Jerry some tomorrow.", "Amanda will bring Jerry cookies she baked, tomorrow!"),
    ("Olivia and Olivier are voting for liberals in this election.",
     "Olivia and Olivier vote for the Liberals in this year's election."),
    ("The meeting was moved to Friday; Tom agreed.", "Tom agreed that the meeting moves to Friday."),
]


@pytest.mark.parametrize("mode, stemmer", [("rouge", False), ("rouge-stem", True)])
def test_rouge_tokenizers_score_english_exactly_as_rouge_score(mode, stemmer):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stemmer)
    theirs = [scorer.score(ref, pred) for ref, pred in ENGLISH]
    for (ref, pred), expected in zip(ENGLISH, theirs):
        ours = rouge([pred], [[ref]], tokenize=mode)
        assert {k: ours[k] for k in expected} == {k: s.fmeasure for k, s in expected.items()}
    together = rouge([pred for _, pred in ENGLISH], [[ref] for ref, _ in ENGLISH], tokenize=mode)
    assert together["rouge1"] == pytest.approx(sum(t["rouge1"].fmeasure for t in theirs) / len(ENGLISH), abs=1e-12)


def test_whitespace_tokens_undercount_english_where_rouge_score_does_not():
    (ref, pred), _, (ref3, pred3) = ENGLISH
    assert rouge([pred], [[ref]], "whitespace")["rouge1"] < rouge([pred], [[ref]], "rouge")["rouge1"]  # "tomorrow!"
    assert rouge([pred3], [[ref3]], "rouge")["rouge1"] < rouge([pred3], [[ref3]], "rouge-stem")["rouge1"]  # moves


def test_whitespace_hand_computed():
    scores = rouge(["a b c"], [["a b d"]], tokenize="whitespace")
    assert scores["rouge1"] == pytest.approx(2 / 3)  # 2 of 3 unigrams shared
    assert scores["rouge2"] == pytest.approx(1 / 2)  # "a b" of 2 bigrams
    assert scores["rougeL"] == pytest.approx(2 / 3)  # LCS "a b"


def test_whitespace_lowercases_and_keeps_hangul():
    assert rouge(["Hello 세계"], [["hello 세계"]], tokenize="whitespace")["rouge1"] == 1.0


def test_morpheme_credits_shared_stems_across_particles():
    pred, ref = "친구가 학교에 갔다", "친구는 학교로 갔다"
    morph = rouge([pred], [[ref]], tokenize="morpheme")
    ws = rouge([pred], [[ref]], tokenize="whitespace")
    assert morph["rouge1"] > ws["rouge1"]
    assert morph["mean"] > ws["mean"]


def test_multi_reference_is_averaged_not_max():
    scores = rouge(["a b c"], [["a b c", "x y z"]], tokenize="whitespace")
    assert scores["rouge1"] == pytest.approx(0.5)
    assert scores["rougeL"] == pytest.approx(0.5)


def test_rows_are_averaged_and_empty_prediction_scores_zero():
    scores = rouge(["a b c", ""], [["a b c"], ["a b c"]], tokenize="whitespace")
    assert scores["rouge1"] == pytest.approx(0.5)
    assert rouge([""], [["a"]], tokenize="morpheme")["mean"] == 0.0


def test_bare_string_reference_is_one_reference():
    assert rouge(["a b"], ["a b"], tokenize="whitespace")["rouge1"] == 1.0


def test_mean_is_mean_of_three():
    scores = rouge(["a b c d"], [["a c b d e"]], tokenize="whitespace")
    assert len({scores["rouge1"], scores["rouge2"], scores["rougeL"]}) == 3  # non-trivial case
    assert scores["mean"] == pytest.approx((scores["rouge1"] + scores["rouge2"] + scores["rougeL"]) / 3)


def test_unknown_tokenize_names_allowed_values():
    with pytest.raises(ValueError, match=", ".join(TOKENIZERS)):
        rouge(["a"], [["a"]], tokenize="chars")


def test_length_mismatch_and_empty_inputs():
    with pytest.raises(ValueError, match="mismatch"):
        rouge(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        rouge([], [])
    with pytest.raises(ValueError, match="no references"):
        rouge(["a"], [[]])


def test_read_references_in_order_skipping_empty():
    row = {"fname": "d1", "dialogue": "...", "summary3": "c", "summary": "a", "summary2": " ", "summary4": None}
    assert read_references(row) == ["a", "c"]


def test_our_scores_are_rouge_scores_on_random_token_lists():
    """Ours score pre-tokenized text with rouge-score's arithmetic written out; rouge-score itself is the judge,
    over short lists from a small vocabulary (many repeats, empty lists, no overlap) and longer ones."""
    import random

    from models.metrics import ROUGE_TYPES, scores

    class Given:  # rouge-score's tokenizer interface, handing back lists made here
        def tokenize(self, text):
            return tokens[text]

    rng, tokens = random.Random(0), {}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=Given())
    for case in range(2000):
        vocabulary = [f"w{i}" for i in range(rng.choice([2, 5, 50]))]
        pair = [[rng.choice(vocabulary) for _ in range(rng.choice([0, 1, 3, 12, 60]))] for _ in range(2)]
        tokens = {"ref": pair[0], "pred": pair[1]}
        theirs = scorer.score("ref", "pred")
        for key, value in scores(pair[0], pair[1]).items():
            assert value == pytest.approx(theirs[key].fmeasure, abs=1e-12), (case, key, pair)
