"""The stream-order rules of the fleet front door, without I/O."""

from __future__ import annotations

import pytest

from ringbridge.fleet.sequencer import Delivery, Idle, Query, Ready, Sequencer


class Handle:
    async def ack(self) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


def dlv(source: int, seq: int, cseq: int, delivered: int = 1) -> Delivery:
    return Delivery(source, seq, f"s{source}", b"x" * 8, None, cseq, delivered, Handle())


def copy(source: int, seq: int) -> Delivery:
    return Delivery(source, seq, f"s{source}", b"x" * 8, None)


def test_a_fresh_consumer_chains_from_its_first_seq_without_asking_the_stream() -> None:
    sq = Sequencer(1, position=0)
    sq.restart_source(0, 1)
    for cseq, seq in enumerate((3, 7, 9), 1):  # other subjects' messages in between
        assert sq.offer(dlv(0, seq, cseq))
    for seq in (3, 7, 9):
        step = sq.next_step()
        assert isinstance(step, Ready) and step.seq == seq
        sq.resolved(seq)
    assert isinstance(sq.next_step(), Idle)


def test_an_unknown_gap_is_asked_about_and_filled_with_the_streams_copy() -> None:
    # A restart: the consumer exists; the dead process held 6, it comes back
    # only after its ack wait, while 8 (new) is delivered at once.
    sq = Sequencer(1, position=5)
    sq.offer(dlv(0, 8, 20))
    step = sq.next_step()
    assert step == Query((0,), 5, 8)
    sq.learn(0, copy(0, 6), 8)
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 6 and step.deliveries[0].handle is None
    sq.resolved(6)
    # Whether 6 was the last before 8 is not known yet: ask again.
    assert sq.next_step() == Query((0,), 6, 8)
    sq.learn(0, copy(0, 8), 8)
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 8
    assert step.deliveries[0].handle is not None  # the delivery is kept, to be acked
    sq.resolved(8)
    # The redelivery of 6 comes at last: a duplicate.
    assert not sq.offer(dlv(0, 6, 21, delivered=2))


def test_a_message_waits_until_every_other_subject_is_known_to_have_nothing_before_it() -> None:
    sq = Sequencer(2, position=0)
    sq.restart_source(0, 1)
    sq.restart_source(1, 1)
    sq.offer(dlv(0, 4, 1))
    # Subject 1 may still have 1..3 to come: ask.
    assert sq.next_step() == Query((1,), 0, 4)
    sq.learn(1, copy(1, 2), 4)  # it has 2
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 2
    sq.resolved(2)
    sq.offer(dlv(1, 2, 1))  # its delivery of 2 arrives late: a duplicate to ack
    assert sq.position == 2
    assert sq.next_step() == Query((1,), 2, 4)
    sq.learn(1, None, 4)  # nothing more on subject 1 up to 4
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 4


def test_redeliveries_keep_the_chain_but_do_not_extend_coverage() -> None:
    sq = Sequencer(1, position=0)
    sq.restart_source(0, 1)
    sq.offer(dlv(0, 1, 1))
    sq.offer(dlv(0, 1, 2, delivered=2))  # a redelivery of 1 takes consumer seq 2
    sq.offer(dlv(0, 2, 3))  # the next new message still chains
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 1 and len(step.deliveries) == 2
    sq.resolved(1)
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 2


def test_a_gap_in_consumer_seqs_breaks_the_chain() -> None:
    sq = Sequencer(1, position=0)
    sq.restart_source(0, 1)
    sq.offer(dlv(0, 1, 1))
    sq.offer(dlv(0, 5, 3))  # consumer seq 2 was lost with a connection
    sq.resolved(1)
    assert sq.next_step() == Query((0,), 1, 5)


def test_duplicates_and_order_are_enforced() -> None:
    sq = Sequencer(1, position=10)
    assert not sq.offer(dlv(0, 10, 1))
    assert not sq.offer(copy(0, 3))
    sq.offer(dlv(0, 12, 2))
    sq.offer(dlv(0, 14, 3))
    with pytest.raises(ValueError):
        sq.resolved(14)  # not the lowest held
    with pytest.raises(ValueError):
        sq.restart_source(0, 12)  # would skip 11
    assert sq.held_messages == 2 and sq.held_bytes == 16
    sq.resolved(12)
    assert sq.held_messages == 1 and sq.held_bytes == 8


def test_catch_up_asks_the_stream_for_what_a_dead_process_left_unacked() -> None:
    # Restart with nothing new: messages up to 9 were delivered to the dead
    # process; without catch_up the node would wait for their ack wait.
    sq = Sequencer(2, position=4)
    assert isinstance(sq.next_step(), Idle)
    sq.catch_up(9)
    assert sq.next_step() == Query((0, 1), 4, 9)
    sq.learn(0, copy(0, 6), 9)
    sq.learn(1, copy(1, 5), 9)
    for seq in (5, 6):
        step = sq.next_step()
        assert isinstance(step, Ready) and step.seq == seq
        sq.resolved(seq)
    # Whether more follow up to 9 on either subject is asked before going idle.
    assert sq.next_step() == Query((0, 1), 6, 9)
    sq.learn(0, None, 9)
    sq.learn(1, copy(1, 8), 9)
    step = sq.next_step()
    assert isinstance(step, Ready) and step.seq == 8
    sq.resolved(8)
    assert sq.next_step() == Query((1,), 8, 9)
    sq.learn(1, None, 9)
    assert isinstance(sq.next_step(), Idle)
