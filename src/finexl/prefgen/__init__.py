"""PrefGen: personalize the generator from liked and disliked images (docs/PREFGEN.md).

Interface notes for the helpers building on this package (kept small on purpose):

- ``vocabulary``: ``ATTRIBUTES`` (name, kind content|style, group, slot/value, ``text`` for
  the mini text space), ``contradicts(a, b)``, ``compatible(liked, disliked)``,
  ``apply_styles(image, names, rng)``.
- ``pool`` / ``agents`` / ``users``: the generated base-image pool, simulated users
  (``AgentSampler``, ``agent_at``, ``render_agent``, ``write_agents``), ``load_users(folder)``.
  An agents folder holds ``agents.json`` (held-out style pairs, pool path), ``users.jsonl``
  (with a ``split`` and per-image ``sources``: pool index, seed, styles) and ``img/``.
- Extractor contract (tiny here, a real VLM in ``vlm_features``): images marked liked or
  disliked + a question -> read-out (last-token) state of every layer + answers. The tiny
  one is ``extractor.TinyPreferenceExtractor(features, kinds, form, attribute,
  candidates) -> ExtractorOutput(states (b, layers, hidden), binary, lists)``; question
  forms and their text templates are in ``vqa`` (``FORMS``, ``TEMPLATES``).
- ``probes``: ``inter_user_accuracy``, ``intra_user_accuracy``, ``choose_layers`` (the
  written rule), ``ProbeReport``; ``losses.mmd_loss`` (pure, batched, masked).
- ``model.PrefGenModel.load("builtin:prefgen-tiny" | folder)``: ``.profile(liked,
  disliked) -> profile.UserProfile``; ``.fingerprint``, ``.base_model``,
  ``.embedding_parts`` (``{"g_sem": 512, "e_core": 128, "e_img": 128}`` for the shipped
  model), ``.branch_path`` (``<folder>/prefgen_user_branch.safetensors`` or None).
- ``profile.UserProfile``: ``user_embedding(drop=())`` -> 1-D float32 e_u = [g_sem; e_core;
  e_img] with dropped parts zeroed; ``save``/``load`` ``*.user.safetensors``; ``check(
  model_fingerprint=, base_model=)`` raises a one-line FinexlError for a foreign profile.
- ``train``: ``TrainConfig`` (every ablation switch: ``no_vqa``, ``layer_rule``,
  ``align_loss``, ``drop``) and ``train(config, stages=...)``; ``user_embeddings`` + ``branch_data.branch_batches`` feed
  ``train_branch.train_branch``.

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
  this for precomputed ``e_u``. Measured on 12 held-out users (stand-in e_u, lr 1e-3, 200
  steps, ``scripts/user_branch_check.py``, docs/USER_BRANCH.md): ``content_weight=1.0``
  keeps content (object-mask IoU with the λ=0 image 0.95) but the branch barely learns
  (denoising loss −3% vs λ=0) and styles hardly move; ``content_weight=0`` learns (−25%,
  another user's e_u only −6%), liked dark/bright/vivid/contrast/vignette follow, IoU
  0.77 at λ=1 (prototype: 0.52). So train the shipped branch with ``content_weight=0``
  (λ then trades taste for content at generation).
- Generation (``user_generation``) reads a profile with ``profile.UserProfile.load(path)``
  and uses ``model_fingerprint``, ``base_model`` and ``user_embedding()``; the branch file
  of a PrefGen model folder is ``<folder>/prefgen_user_branch.safetensors``
  (``loaders.USER_BRANCH_WEIGHTS``), written by ``loaders.save_user_branch``.

Nothing here runs on import.
"""
