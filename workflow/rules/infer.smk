# Rules infer_*: segment new, unlabelled images (infer.images) with model packages, in shards of a stable hash of
# their paths. infer_list writes a shard's files and settings (a shard is predicted again only when they or the
# package change); infer_check reads every image once, all problems reported together, before any shard predicts.
# A whole-slide image is no shard's: it is predicted in infer.slide_jobs parts (runs of rows of regions, one job
# each) that infer_slide merges into its label pyramid, equal to one job's.
# Snakemake does not look at the own reasons of a job downstream of a rerunning job (it waits for the rerun to reach
# it), and a shard reaches infer_check only through an ancient() input: so every reason to redo a shard goes through
# its list.


INFER_MODELS = infer_models()
INFER_SHARDS, INFER_SLIDES = infer_inputs() if INFER["images"] is not None else ({}, {})
INFER_ROIS = [str(path) for path in image_files(INFER["rois"])]  # infer.rois: every file, none when unset
SLIDE_EXTRAS = [f"{RESULTS}/infer/{{model}}/masks/{{slide}}.{extra}" for extra in ("objects.parquet", "geojson")]
SLIDE_SETTINGS = (
    "device",
    "slide_pixel_size",
    "slide_region",
    "slide_jobs",
    "slide_object_size",
    "slide_geojson",
    "slide_tissue",
)


wildcard_constraints:
    model="|".join(map(re.escape, INFER_MODELS)),
    shard=r"\d+",
    slide="|".join(map(re.escape, INFER_SLIDES)) or "(?!)",
    part=r"\d+",


rule infer_list:
    input:
        images=lambda wc: INFER_SHARDS[int(wc.shard)],
        # the files of DICOM series folders: a changed slice redoes its shard
        slices=lambda wc: with_series_files(INFER_SHARDS[int(wc.shard)]),
        rois=INFER_ROIS,  # a changed region of interest redoes the shards
        package=lambda wc: INFER_MODELS[wc.model],
    output:
        f"{RESULTS}/infer/{{model}}/lists/shard{{shard}}.json",
    log:
        f"{RESULTS}/logs/infer/{{model}}/list_shard{{shard}}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        infer=canonical({key: INFER[key] for key in ("device", "save_probabilities", "dicom_seg", "rois")}),
    script:
        "../scripts/infer_list.py"


rule infer_slide_list:
    input:
        images=lambda wc: [INFER_SLIDES[wc.slide]],
        package=lambda wc: INFER_MODELS[wc.model],
    output:
        f"{RESULTS}/infer/{{model}}/slides/{{slide}}/list.json",
    log:
        f"{RESULTS}/logs/infer/{{model}}/slides/{{slide}}/list.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        infer=canonical({key: INFER[key] for key in SLIDE_SETTINGS}),
    script:
        "../scripts/infer_list.py"


rule infer_check:
    input:
        lists=lambda wc: expand(rules.infer_list.output[0], model=wc.model, shard=sorted(INFER_SHARDS)),
        slides=lambda wc: expand(rules.infer_slide_list.output[0], model=wc.model, slide=sorted(INFER_SLIDES)),
        package=lambda wc: INFER_MODELS[wc.model],
    output:
        f"{RESULTS}/infer/{{model}}/inputs.parquet",
    log:
        f"{RESULTS}/logs/infer/{{model}}/check.log",
    conda:
        "../../envs/torch.yaml"
    threads: 4
    params:
        spec=INFER["images"],
        slide_pixel_size=INFER["slide_pixel_size"],
        rois=INFER["rois"],
    script:
        "../scripts/infer_check.py"


rule infer_shard:
    input:
        shard=rules.infer_list.output[0],  # its files and settings: the shard reruns when they change
        package=lambda wc: INFER_MODELS[wc.model],
        # every image is checked before any shard predicts; ancient: new images in other shards rerun no shard (a
        # str copy: ancient() flags the object it gets, which would make infer_check's output ancient everywhere)
        checked=ancient(str(rules.infer_check.output[0])),
    output:
        table=f"{RESULTS}/infer/{{model}}/shards/shard{{shard}}.parquet",
        objects=f"{RESULTS}/infer/{{model}}/shards/shard{{shard}}_objects.parquet",
    log:
        f"{RESULTS}/logs/infer/{{model}}/shard{{shard}}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=uses_gpu(INFER),
    params:
        masks=f"{RESULTS}/infer/{{model}}/masks",  # laid out as the inputs are, shared by the shards
    script:
        "../scripts/infer_shard.py"


rule infer_slide_part:
    input:
        listed=rules.infer_slide_list.output[0],  # its file and settings: the part reruns when they change
        package=lambda wc: INFER_MODELS[wc.model],
        checked=ancient(str(rules.infer_check.output[0])),  # as infer_shard's
    output:
        labels=temp(f"{RESULTS}/infer/{{model}}/slides/{{slide}}/part{{part}}.npy"),
        objects=temp(f"{RESULTS}/infer/{{model}}/slides/{{slide}}/part{{part}}_objects.npy"),
    log:
        f"{RESULTS}/logs/infer/{{model}}/slides/{{slide}}/part{{part}}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=uses_gpu(INFER),
    script:
        "../scripts/infer_slide_part.py"


rule infer_slide:
    input:
        parts=expand(rules.infer_slide_part.output.labels, part=range(INFER["slide_jobs"]), allow_missing=True),
        objects=expand(rules.infer_slide_part.output.objects, part=range(INFER["slide_jobs"]), allow_missing=True),
        listed=rules.infer_slide_list.output[0],
        package=lambda wc: INFER_MODELS[wc.model],
    output:
        labels=f"{RESULTS}/infer/{{model}}/masks/{{slide}}.ome.tif",  # laid out as the inputs are
        table=f"{RESULTS}/infer/{{model}}/slides/{{slide}}/summary.parquet",
    log:
        f"{RESULTS}/logs/infer/{{model}}/slides/{{slide}}/merge.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/infer_slide.py"


rule infer_summary:
    input:
        tables=lambda wc: expand(rules.infer_shard.output.table, model=wc.model, shard=sorted(INFER_SHARDS)),
        objects=lambda wc: expand(rules.infer_shard.output.objects, model=wc.model, shard=sorted(INFER_SHARDS)),
        slides=lambda wc: expand(rules.infer_slide.output.table, model=wc.model, slide=sorted(INFER_SLIDES)),
        checked=rules.infer_check.output[0],  # redone whenever the images change, also when a shard goes away
    output:
        summary=f"{RESULTS}/infer/{{model}}/summary.parquet",
        objects=f"{RESULTS}/infer/{{model}}/objects.parquet",
        slides=f"{RESULTS}/infer/{{model}}/slides.parquet",
    log:
        f"{RESULTS}/logs/infer/{{model}}/summary.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        shards=sorted(INFER_SHARDS),
        # a slide's file and outputs, removed with it: those of its rules, and its object table and polygons
        slides=lambda wc: {
            name: dict(
                image=path,
                outputs=expand(
                    [*rules.infer_slide.output, *rules.infer_slide_list.output, *SLIDE_EXTRAS],
                    model=wc.model,
                    slide=name,
                ),
            )
            for name, path in INFER_SLIDES.items()
        },
    script:
        "../scripts/infer_summary.py"


rule infer:
    input:
        infer_targets,
