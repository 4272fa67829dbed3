"""A run: stages executed in order into an output folder.

    runner     the built-in pipeline (`tfopt compress --dataset ...`)
    task_run   any model on the user's task (`tfopt.compress`, --task)
    preflight  every input checked before anything trains
    resume     which finished stages an interrupted run keeps
    deploy     the deploy/ bundle: model, labels, metadata, example
"""
