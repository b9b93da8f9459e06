"""The verdicts on a generated record, first judged when its chunk commits and reused downstream.

- :mod:`~generation.verdicts.quality`: why a record is rejected (``REJECT_REASONS``, ``record_verdict``);
- :mod:`~generation.verdicts.language`: the language check behind ``not_english``;
- :mod:`~generation.verdicts.labels`: the label verifier (an answer against its class in WordNet),
  over the WordNet 3.0 table of :mod:`~generation.verdicts.wordnet` (``data/``);
- :mod:`~generation.verdicts.policy`: the one rule for a stored verdict: take it when its rules'
  fingerprint is current, else judge now.
"""
