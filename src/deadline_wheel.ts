/**
 * Inactivity deadlines for many items (sessions) with one timer: a hashed timer wheel with lazy
 * re-arming. An item's activity only updates a field of its own; the wheel files the item under
 * the slot of its deadline and, when that slot comes up, asks the item for its deadline again:
 * due, it is told so once; not yet (there was activity meanwhile), it is filed under its new
 * deadline. So a busy item costs nothing per byte, and an item is looked at about once per
 * timeout period, however much traffic it carries. Lazy re-arming finds deadlines that moved
 * later; an item whose deadline moves earlier (a shorter timeout starts) must be added again.
 *
 * The timer ticks every `resolutionMs` only while the wheel holds items; deadlines are met up to
 * one resolution late, never early.
 *
 * ```ts
 * import { DeadlineWheel } from "./deadline_wheel.ts";
 *
 * let lastActive = performance.now();
 * const item = { dueAt: () => lastActive + 1_000, onDue: () => console.log("idle for 1s") };
 * const wheel = new DeadlineWheel(100);
 * wheel.add(item);
 * lastActive = performance.now(); // activity: nothing else to do
 * wheel.delete(item); // done with it
 * ```
 *
 * @module
 */

/** An item the wheel watches. */
export interface Deadline {
  /** When it falls due (a `performance.now()` time), or `Infinity` for not at all. Read lazily. */
  dueAt(): number;
  /** Called once, when `dueAt()` has passed; the wheel has forgotten the item by then. */
  onDue(now: number): void;
}

/** Watches many {@link Deadline}s with one timer. See the module documentation. */
export class DeadlineWheel<T extends Deadline> {
  readonly #resolutionMs: number;
  /** Slot number (time / resolution, rounded up) to the items filed under it. */
  readonly #slots = new Map<number, Set<T>>();
  /** Each item's slot, for deletion in O(1); `Infinity` for items with no deadline now. */
  readonly #slotOf = new Map<T, number>();
  /** The next slot to look at. */
  #cursor = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** @param resolutionMs how often the wheel looks while it holds items; greater than 0. */
  constructor(resolutionMs: number) {
    if (!(resolutionMs > 0)) {
      throw new RangeError(`resolutionMs must be greater than 0, got ${resolutionMs}`);
    }
    this.#resolutionMs = resolutionMs;
  }

  /** Items watched now. */
  get size(): number {
    return this.#slotOf.size;
  }

  /**
   * Starts watching `item` at its current `dueAt()`; for an item watched already, makes sure it
   * is looked at by then (nothing to do when it is filed no later than that).
   */
  add(item: T): void {
    this.#start();
    const filed = this.#slotOf.get(item);
    if (filed !== undefined) {
      if (filed <= this.#slotFor(item.dueAt())) return;
      this.delete(item);
      this.#start();
    }
    this.#file(item, item.dueAt());
  }

  /** Stops watching `item`; nothing happens if it is not watched. */
  delete(item: T): void {
    const slot = this.#slotOf.get(item);
    if (slot === undefined) return;
    this.#slotOf.delete(item);
    const items = this.#slots.get(slot);
    if (items === undefined) return;
    items.delete(item);
    if (items.size === 0) this.#slots.delete(slot);
    if (this.#slotOf.size === 0) this.#stop();
  }

  /** Forgets every item and stops the timer. */
  clear(): void {
    this.#slots.clear();
    this.#slotOf.clear();
    this.#stop();
  }

  /** The slot a deadline goes under; one already past goes under the next slot looked at. */
  #slotFor(dueAt: number): number {
    if (dueAt === Infinity) return Infinity;
    return Math.max(Math.ceil(dueAt / this.#resolutionMs), this.#cursor);
  }

  #file(item: T, dueAt: number): void {
    const slot = this.#slotFor(dueAt);
    this.#slotOf.set(item, slot);
    let items = this.#slots.get(slot);
    if (items === undefined) this.#slots.set(slot, items = new Set());
    items.add(item);
  }

  #start(): void {
    if (this.#timer !== undefined) return;
    if (this.#cursor === 0) this.#cursor = Math.floor(performance.now() / this.#resolutionMs);
    this.#timer = setTimeout(() => this.#tick(), this.#resolutionMs);
  }

  #stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#cursor = 0;
  }

  #tick(): void {
    this.#timer = undefined;
    const now = performance.now();
    const last = Math.floor(now / this.#resolutionMs);
    for (; this.#cursor <= last; this.#cursor++) {
      const items = this.#slots.get(this.#cursor);
      if (items === undefined) continue;
      this.#slots.delete(this.#cursor);
      for (const item of items) {
        const dueAt = item.dueAt();
        if (dueAt <= now) {
          this.#slotOf.delete(item);
          item.onDue(now);
        } else {
          this.#file(item, dueAt);
        }
      }
    }
    if (this.#slotOf.size > 0) {
      this.#timer = setTimeout(() => this.#tick(), this.#resolutionMs);
    } else {
      this.#cursor = 0;
    }
  }
}
