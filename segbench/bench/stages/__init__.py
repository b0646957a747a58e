"""The stages of a unit of work, each writing records to the run's sink: ``timing`` (measure a cell,
run by an executor), ``capacity`` (the largest batch), ``numerics`` (task and tensor verdicts) and
``diagnosis`` (where a failed fp16 graph diverges). A new stage is one new file here plus one line in
``segbench.bench.pipeline.UNIT_STAGES``."""
