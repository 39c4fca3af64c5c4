"""On-device personalisation: a new head fitted in numpy on a few labelled windows of one user (no torch).

`python -m crossl_edge.personalize --help`; the pieces: `collect` (labelled windows from a recording or from
sensors), `embed` (their global embeddings through the bundle's programs), `heads` (fitting), `bundle`
(writing and checking the personalised bundle), `protocol` (how the benchmark measures it).
"""
