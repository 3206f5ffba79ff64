"""A harden job's default evaluation size: within its budget, never below a useful floor."""

from __future__ import annotations

from core.service.jobs.eval_budget import (
    DEFAULT_MAX_SAMPLES,
    EVAL_BUDGET_FRACTION,
    MIN_SAMPLES,
    harden_evaluation_samples,
    passes_per_image,
    training_passes,
)


def test_a_large_job_evaluates_the_default_number_of_images():
    # CIFAR-10-sized: 45,000 training images, 10 epochs of PGD-10.
    training = training_passes(
        train_images=45_000, epochs=10, train_attack_steps=10, val_images=500, val_steps=10
    )
    assert harden_evaluation_samples(training=training, attack_steps=20) == DEFAULT_MAX_SAMPLES


def test_a_mid_sized_job_gets_as_many_images_as_its_budget_pays_for():
    training = training_passes(
        train_images=4_000, epochs=5, train_attack_steps=7, val_images=400, val_steps=10
    )
    samples = harden_evaluation_samples(training=training, attack_steps=20)
    assert MIN_SAMPLES < samples < DEFAULT_MAX_SAMPLES
    cost = 2 * samples * passes_per_image(20)
    assert cost <= EVAL_BUDGET_FRACTION * training < cost + 2 * passes_per_image(20)


def test_a_tiny_job_still_gets_an_interval_worth_reading():
    training = training_passes(
        train_images=300, epochs=2, train_attack_steps=5, val_images=100, val_steps=10
    )
    assert harden_evaluation_samples(training=training, attack_steps=20) == MIN_SAMPLES


def test_more_attack_steps_cost_more_per_image_so_fewer_fit():
    training = training_passes(
        train_images=3_000, epochs=10, train_attack_steps=7, val_images=300, val_steps=10
    )
    assert harden_evaluation_samples(training=training, attack_steps=40) < (
        harden_evaluation_samples(training=training, attack_steps=10)
    )
