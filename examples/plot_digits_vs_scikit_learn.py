"""
Digits: knn_gpu against scikit-learn
====================================

Classify scikit-learn's 8 × 8 handwritten digits with
:class:`knn_gpu.KNeighborsClassifier` and with
scikit-learn's ``sklearn.neighbors.KNeighborsClassifier``, for k = 1 to 15. The
digits' pixels are small integers, so many distances tie exactly; knn_gpu
keeps the lower training index among equal distances, so where a vote hangs
on such a tie the two can differ. Here they agree on every test image.

Needs: knn_gpu, scikit-learn and matplotlib.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier as SklearnClassifier

from knn_gpu import KNeighborsClassifier

digits = load_digits()
X_train, X_test, y_train, y_test = train_test_split(
    digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
)

ks = list(range(1, 16, 2))
ours, theirs, differing = [], [], []
for k in ks:
    predicted = KNeighborsClassifier(n_neighbors=k).fit(X_train, y_train).predict(X_test)
    expected = SklearnClassifier(n_neighbors=k, algorithm="brute").fit(X_train, y_train).predict(X_test)
    ours.append((predicted == y_test).mean())
    theirs.append((expected == y_test).mean())
    differing.append(int((predicted != expected).sum()))
    print(f"k = {k:2d}: accuracy {ours[-1]:.4f} (scikit-learn {theirs[-1]:.4f}), {differing[-1]} predictions differ")

fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
ax.plot(ks, ours, marker="o", label="knn_gpu")
ax.plot(ks, theirs, marker="x", linestyle="--", label="scikit-learn (brute)")
ax.set_xlabel("k (n_neighbors)")
ax.set_ylabel("test accuracy")
ax.set_title(f"digits: {len(X_train)} training, {len(X_test)} test images")
ax.legend()
plt.show()

# %%
# The first test images, with knn_gpu's prediction (k = 5) and the true label.

model = KNeighborsClassifier(n_neighbors=5).fit(X_train, y_train)
predicted = model.predict(X_test[:12])
fig, axes = plt.subplots(2, 6, figsize=(7.2, 3.0), layout="constrained")
for ax, image, guess, truth in zip(axes.ravel(), X_test[:12], predicted, y_test[:12]):
    ax.imshow(image.reshape(8, 8), cmap="gray_r")
    ax.set_title(f"{guess} (true {truth})", fontsize=9, color="black" if guess == truth else "red")
    ax.set_axis_off()
plt.show()
