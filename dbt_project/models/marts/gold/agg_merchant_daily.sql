with

transactions as (

    select * from {{ ref('fct_transactions') }}

),

labels as (

    select * from {{ ref('fct_labels') }}

),

final as (

    select
        transactions.merchant_id,
        transactions.event_date,
        count(*) as txn_count,
        -- exact decimal sum: a float sum depends on row order, a replay must not
        cast(sum(cast(transactions.amount as decimal(38, 6))) as double) as amount_sum,
        count(distinct transactions.card_id) as distinct_cards,
        count(labels.transaction_id) as labelled_count,
        count(*) filter (where labels.is_fraud) as labelled_fraud_count,
        timezone('UTC', cast(transactions.event_date + interval 1 day as timestamp)) as window_end_at

    from transactions
    left join labels
        on transactions.transaction_id = labels.transaction_id

    group by transactions.merchant_id, transactions.event_date

)

select * from final
