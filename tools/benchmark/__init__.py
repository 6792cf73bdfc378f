"""`make bench` and `make report`: measure the tagging job against a single-process ceiling.

Modules:
    dataset    the fixed, seeded benchmark images (JPEG, 600-1000 px, 50-200 KB), cached
    ceiling    single-process decode / inference / combined throughput with the job's own code
    runner     spark-submits every profile and the predict_batch_udf reference, one record each
    reference_predict_batch   the straightforward `predict_batch_udf` job (the reference)
    records    the run-record format and its validation
    cost       EMR cost per million images, nodes for 300M in 24 h (conf/prices.yaml)
    analysis   a bench run's records -> baseline, best, reference, targets, summary.json
    findings   what a bench run says beyond its table: int8, core scaling, start-up, timeline, sizes
    plots      the PNGs of reports/latest/
    markdown   reports/latest/README.md
    report     make report: analysis -> plots + markdown + summary.json into reports/latest/
    sweep      the 03 profile's Spark parameters, one at a time (make sweep: reports/sweep.md)
    heads_only a head added to a tagged catalogue: full pass vs heads on stored embeddings (make bench-heads)
    bench.mk   the make targets (bench, bench-large, report, sweep, bench-heads)

A dev tool: it lives in tools/, outside the package that EMR nodes install.
"""
