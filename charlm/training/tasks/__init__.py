"""The tasks `train()` runs, one module each (the registry by `--model` is `charlm.training.run.TASKS`).

    lm.py        the truncated-BPTT language model (`LMTask`), its loss with AR/TAR, `train_step`
    lm_setup.py  opening a language-model run: data, size checks, the options charlm chooses
    ngram.py     the Kneser-Ney n-gram model, estimated in one pass (no loop)
    tag.py       the sequence tagger (`--model tag`): labelled sentences, BiLSTM(-CRF), accuracy and entity F1
    classify.py  a text classifier (`ClassifyTask`); classify_setup.py opens its run (data, language models, choices)

A new task (a tagger, a classifier) is a module here and one line in TASKS; see
`charlm.training.task` for what it implements.
"""
