-- Confirmed frauds by merchant, stamped with the time the fraud became KNOWN (label_time),
-- not the time it happened: the merchant fraud-rate feature counts only labels already known
-- at scoring time, so label delay cannot leak the future into training.
with

labels as (

    select * from {{ ref('fct_labels') }}

),

transactions as (

    select * from {{ ref('fct_transactions') }}

),

final as (

    select

        ----------  ids
        labels.transaction_id,
        transactions.merchant_id,

        ---------- label
        labels.fraud_type,

        ---------- timestamps
        labels.label_time,
        transactions.event_time as transaction_time

    from labels
    inner join transactions
        on labels.transaction_id = transactions.transaction_id
    where labels.is_fraud

)

select * from final
