"""The estimators, above the public functions: the tutorial's ``KNN`` and ``KNNClassifier`` and the
scikit-learn-named drop-ins.
"""
