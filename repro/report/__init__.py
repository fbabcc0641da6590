"""The report: what serves the notebooks and the pipeline.

The library half of ``repro`` (``repro.data``, ``repro.model``,
``repro.train``, ``repro.evaluate``, ``repro.loss``, ``repro.metrics``)
builds, trains and evaluates models; this package turns them into the
report. One module per notebook step:

    data_prep        01_data_prep           the dataset, built or validated, and counted
    training         02_train               training runs from the notebook's parameters
    alpha_sweep      03_alpha_sweep         NetVLAD's alpha, off-the-shelf (and trained)
    fmax_size        04_fmax_output_size    recall against descriptor size
    summary, claims, readme, reference
                     05_paper_comparison    results/summary.csv, results/claims.csv, the README's
                                            results section, the paper's numbers
    authors_models   06_authors_models      the authors' released networks
    real_images      07_real_images         real photographs (../shared/data/real): off-the-shelf, alpha, sim-to-real

and what the steps share:

    parameters       every notebook's parameters, declared once, and their checks
    names            result files and their names (what the pipeline skips)
    off_the_shelf    untrained models on cached conv maps (03, 04)
    conv_maps        the conv-map cache and pooling of cached maps
    plots, figures   drawing, and the figure files under figures/
    profiles         params/{profile}.yaml and the runs it plans
    pipeline         the runner (python -m repro.pipeline)
    costs            what a profile costs, and the measured throughput that prices it
"""
