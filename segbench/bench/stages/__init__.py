"""The stages of a unit of work. Device stages run where the device is (the run's executor runs them)
and yield their records: ``timing`` (measure each cell) and ``capacity`` (the largest batch). Driver
stages run in the pipeline and write to the run's sink: ``numerics`` (task and tensor verdicts) and
``diagnosis`` (where a failed fp16 graph diverges). A new stage is one new file here plus one line in
``segbench.bench.executors.local.DEVICE_STAGES`` or ``segbench.bench.pipeline.DRIVER_STAGES``."""
