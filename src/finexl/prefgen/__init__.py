"""PrefGen: personalize the generator from liked and disliked images (see docs/PREFGEN.md).

Between the helpers who build it (what each side may rely on):

- The user branch (``user_branch``, ``loaders``) reads one 1-D float32 ``e_u`` per user and
  knows nothing else about profiles. Its config records ``embed_dim``, ``embedding_parts``
  (``{part: length}``), ``base_model`` and ``prefgen_model``: the fingerprint of the
  PrefGen model whose profiles it was trained on. That fingerprint must not depend on the
  branch file itself (the branch is trained after the extractor and saved inside the same
  model folder), so ``PrefGenModel.fingerprint`` hashes the extractor / probe / align parts.
- ``train_branch.train_branch(data, BranchTrainingArgs(...))`` is the ``adapter`` stage:
  ``data`` yields ``(e_u (b, dim), pixels (b, 3, h, w) in [0, 1], prompts)`` or is a
  callable ``data(start_micro_batch)``; pass ``prefgen_model=<fingerprint>`` and
  ``embedding_parts``. The image and prompt of each row should come from
  ``branch_data.training_example(sampler, agent, rng)``: a pool image *for any prompt*
  re-rendered in the agent's liked styles, and for liked content a prompt that leaves that
  slot open (only liked-content images with their full prompts teach the branch neither
  to keep the prompt's content nor to fill open slots). ``branch_data.branch_batches`` does
  this for precomputed ``e_u``; ``content_weight`` (e.g. 1.0) adds the layout term.
- Generation (``user_generation``) reads a profile with ``profile.UserProfile.load(path)``
  and uses ``model_fingerprint``, ``base_model`` and ``user_embedding()``; the branch file
  of a PrefGen model folder is ``<folder>/prefgen_user_branch.safetensors``
  (``loaders.USER_BRANCH_WEIGHTS``), written by ``loaders.save_user_branch``.
"""
