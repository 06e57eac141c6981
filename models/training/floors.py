"""Quality floors of the shipped ensemble on the test splits, per source: what the README promises.

The evaluation's summary, the model card and the shipped-weights tests all read them from here.
"""
FLOORS = {"busi": {"macro_f1": 0.80, "malignant_auc": 0.90, "dice_mean": 0.75},
          "busbra": {"macro_f1": 0.80, "malignant_auc": 0.88, "dice_mean": 0.82}}
