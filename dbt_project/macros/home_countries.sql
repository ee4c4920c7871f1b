{#-
    For each day a user transacted, the user's home country known at the start of that day
    (models/intermediate/int_user_home_countries_daily.yml), computed from `transactions` (a
    relation or CTE name with user_id, country, event_date, event_time). Every value depends only
    on the user's own transactions, so `transactions` may hold a subset of users with all of
    their days: agg_user_daily's incremental runs pass the users with new transactions only.
-#}
{% macro user_home_countries_daily(transactions) %}
with

user_country_days as (

    select
        user_id,
        country,
        event_date,
        count(*) as txn_count,
        min(event_time) as first_txn_at

    from {{ transactions }}
    group by user_id, country, event_date

),

user_days as (

    select distinct user_id, event_date from {{ transactions }}

),

user_countries as (

    select distinct user_id, country from {{ transactions }}

),

-- every (active day, country the user ever used) pair, with the day's count for that country
grid as (

    select
        user_days.user_id,
        user_days.event_date,
        user_countries.country,
        coalesce(user_country_days.txn_count, 0) as txn_count,
        user_country_days.first_txn_at

    from user_days
    inner join user_countries
        on user_days.user_id = user_countries.user_id
    left join user_country_days
        on user_days.user_id = user_country_days.user_id
        and user_days.event_date = user_country_days.event_date
        and user_countries.country = user_country_days.country

),

-- what was known at the start of each day: counts over the user's earlier active days only
prior as (

    select
        user_id,
        event_date,
        country,
        sum(txn_count) over earlier_days as prior_txn_count,
        min(first_txn_at) over earlier_days as prior_first_txn_at

    from grid
    window earlier_days as (
        partition by user_id, country
        order by event_date
        rows between unbounded preceding and 1 preceding
    )

),

ranked as (

    select
        user_id,
        event_date,
        country,
        prior_txn_count,
        row_number() over (
            partition by user_id, event_date
            order by prior_txn_count desc, prior_first_txn_at, country
        ) as country_rank

    from prior
    where prior_txn_count > 0

),

final as (

    select
        user_days.user_id,
        user_days.event_date,
        ranked.country as home_country,
        coalesce(ranked.prior_txn_count, 0) as home_country_txn_count

    from user_days
    left join ranked
        on user_days.user_id = ranked.user_id
        and user_days.event_date = ranked.event_date
        and ranked.country_rank = 1

)

select * from final
{% endmacro %}
