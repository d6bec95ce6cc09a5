"""ccrec.workflow: everything shaped by a workdir, the top layer of ccrec.

  workdir          the workdir's layout and files: config.json, dataset.json, loading the data
  pipeline         the stages (teacher -> codes -> student pre-training -> distillation) and `run`
  codes_stage      stage 'codes': learn, refine, save and reload the codes
  from_checkpoint  restore a workdir's trained models; evaluate and rank them
  experiments      grids of config overrides over `pipeline.run`, cached; tables
  plots            the figures of the experiment reports

Layers and what each may import: docs/DESIGN.md ("Layers").
"""
