"""nerfstudio integration of EVOS: sampler, datamanager, pipeline, model and method configs."""
