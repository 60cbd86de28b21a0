package openai

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sync/semaphore"
)

// errQueueFull reports a request refused because its model's queue is full.
var errQueueFull = errors.New("queue full")

// queues holds one bounded FIFO queue per model: at most maxConcurrent
// generations of the model run, at most maxQueue more wait, in arrival
// order; the next one is refused. Models are only added once the engine has
// listed them, so the map stays as small as the node's model list.
type queues struct {
	maxConcurrent int64
	maxQueue      int
	metrics       *Metrics

	mu      sync.Mutex
	byModel map[string]*modelQueue
}

// modelQueue is a weighted semaphore (FIFO, and a waiter whose context ends
// leaves the line) plus the count of waiters that bounds the line.
type modelQueue struct {
	sem     *semaphore.Weighted
	mu      sync.Mutex
	waiting int
}

func newQueues(maxConcurrent, maxQueue int, m *Metrics) *queues {
	return &queues{
		maxConcurrent: int64(maxConcurrent),
		maxQueue:      maxQueue,
		metrics:       m,
		byModel:       map[string]*modelQueue{},
	}
}

func (q *queues) get(model string) *modelQueue {
	q.mu.Lock()
	defer q.mu.Unlock()
	mq, ok := q.byModel[model]
	if !ok {
		mq = &modelQueue{sem: semaphore.NewWeighted(q.maxConcurrent)}
		q.byModel[model] = mq
		// Both series exist, at 0, from the model's first request on.
		q.metrics.queueDepth.WithLabelValues(model).Set(0)
		q.metrics.running.WithLabelValues(model).Set(0)
	}
	return mq
}

// acquire waits for a slot to run a generation of model. It returns
// errQueueFull at once when maxQueue requests already wait, and ctx's error
// when ctx ends first (the request leaves the line). release must be called
// exactly once after a nil error.
func (q *queues) acquire(ctx context.Context, model string) (release func(), err error) {
	mq := q.get(model)
	mq.mu.Lock()
	if mq.sem.TryAcquire(1) {
		mq.mu.Unlock()
		return q.running(model, mq), nil
	}
	if mq.waiting >= q.maxQueue {
		mq.mu.Unlock()
		return nil, errQueueFull
	}
	mq.waiting++
	q.metrics.queueDepth.WithLabelValues(model).Set(float64(mq.waiting))
	mq.mu.Unlock()

	err = mq.sem.Acquire(ctx, 1)

	mq.mu.Lock()
	mq.waiting--
	q.metrics.queueDepth.WithLabelValues(model).Set(float64(mq.waiting))
	mq.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return q.running(model, mq), nil
}

// running counts a granted slot and returns its release.
func (q *queues) running(model string, mq *modelQueue) func() {
	g := q.metrics.running.WithLabelValues(model)
	g.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.Dec()
			mq.sem.Release(1)
		})
	}
}

// depth is how many requests wait for model (tests and metrics).
func (q *queues) depth(model string) int {
	mq := q.get(model)
	mq.mu.Lock()
	defer mq.mu.Unlock()
	return mq.waiting
}
